/**
 * A gRPC client for unary calls only, over one HTTP/2 connection with mutual TLS. It implements
 * the wire format of the gRPC over HTTP/2 specification: each message framed with a compression flag
 * and a 32-bit length, the status and message in `grpc-status` and `grpc-message`, and metadata in
 * the trailers, `-bin` keys base64-encoded.
 *
 * The controller calls its agents with this instead of grpc-js. Per connection and call, grpc-js
 * runs a resolver, a load balancer, a subchannel and a stack of call filters, which cost the
 * controller about 1.5 ms of CPU per node. The agents still serve with grpc-js.
 */
import * as http2 from 'node:http2';
import type * as tls from 'node:tls';
import { GrpcStatus, type FailureMetadata } from '@kubetrust/proto/dist/wire';

export interface UnaryTarget {
  readonly host: string;
  readonly port: number;
  /** The TLS server name and the `:authority` of each call. */
  readonly serverName: string;
  readonly secureContext: tls.SecureContext;
  /** Checks the server's certificate after the chain has verified; returns an Error to reject it. */
  readonly checkServerIdentity: (hostname: string, certificate: tls.PeerCertificate) => Error | undefined;
  /** The largest response accepted, in bytes. Defaults to DEFAULT_MAX_RESPONSE_BYTES. */
  readonly maxResponseBytes?: number;
}

/** The largest response a call accepts unless its target sets another limit, as grpc-js's `grpc.max_receive_message_length` did. */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Trailers of a call by lower-case key, with `-bin` values decoded to Buffers. */
export class CallMetadata implements FailureMetadata {
  private readonly values = new Map<string, (string | Buffer)[]>();

  add(key: string, value: string | Buffer): void {
    const list = this.values.get(key);
    if (list === undefined) this.values.set(key, [value]);
    else list.push(value);
  }

  get(key: string): ReadonlyArray<string | Buffer> {
    return this.values.get(key.toLowerCase()) ?? [];
  }
}

/** A call that ended with a status other than OK, or never reached the server. */
export interface CallFailure {
  readonly code: GrpcStatus;
  readonly details: string;
  readonly metadata: CallMetadata;
}

export type UnaryOutcome = { readonly message: Buffer } | { readonly error: CallFailure };

/** Trailer keys that belong to the protocol and are not metadata. */
const RESERVED_KEYS = new Set(['grpc-status', 'grpc-message', 'content-type', 'date', 'grpc-encoding', 'grpc-accept-encoding']);
const MESSAGE_PREFIX_BYTES = 5;

function failure(code: GrpcStatus, details: string, metadata = new CallMetadata()): { error: CallFailure } {
  return { error: { code, details, metadata } };
}

function readMetadata(headers: http2.IncomingHttpHeaders): CallMetadata {
  const metadata = new CallMetadata();
  for (const [key, raw] of Object.entries(headers)) {
    if (key.startsWith(':') || RESERVED_KEYS.has(key) || raw === undefined) continue;
    const values = Array.isArray(raw) ? raw : key.endsWith('-bin') ? String(raw).split(',') : [String(raw)];
    for (const value of values) metadata.add(key, key.endsWith('-bin') ? Buffer.from(value.trim(), 'base64') : value);
  }
  return metadata;
}

/** Decodes the percent-encoded `grpc-message`, and returns a malformed encoding as it came. */
function decodeMessage(raw: string | string[] | undefined): string {
  const text = Array.isArray(raw) ? raw.join(',') : raw ?? '';
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Reads the one message of a unary response from its DATA bytes. */
function readResponseMessage(body: Buffer): Buffer | string {
  if (body.length < MESSAGE_PREFIX_BYTES) return `the response holds ${body.length} bytes, fewer than a message prefix`;
  if (body[0] !== 0) return 'the response message is compressed, which this client did not accept';
  const length = body.readUInt32BE(1);
  if (body.length !== MESSAGE_PREFIX_BYTES + length) return `the response holds ${body.length - MESSAGE_PREFIX_BYTES} message bytes where its prefix announces ${length}`;
  return body.subarray(MESSAGE_PREFIX_BYTES);
}

/** One HTTP/2 connection for unary calls, opened on the first call and again after it closes. */
export class UnaryChannel {
  private session: http2.ClientHttp2Session | undefined;
  /** The error that ended the current connection, given to the calls it fails. */
  private sessionError: Error | undefined;
  private active = 0;
  private closed = false;

  constructor(private readonly target: UnaryTarget) {}

  private connect(): http2.ClientHttp2Session {
    if (this.session !== undefined && !this.session.closed && !this.session.destroyed) return this.session;
    const { host, port, serverName, secureContext, checkServerIdentity } = this.target;
    const authority = host.includes(':') ? `https://[${host}]:${port}` : `https://${host}:${port}`;
    const session = http2.connect(authority, { secureContext, servername: serverName, checkServerIdentity });
    this.sessionError = undefined;
    session.on('error', (error: Error) => {
      if (this.session === session) this.sessionError = error;
    });
    session.on('close', () => {
      if (this.session === session) this.session = undefined;
    });
    this.session = session;
    return session;
  }

  /** Sends one request message to `path` and resolves with the response message or the failure. The promise never rejects. */
  call(path: string, request: Buffer, deadlineMs: number): Promise<UnaryOutcome> {
    if (this.closed) return Promise.resolve(failure(GrpcStatus.UNAVAILABLE, 'the channel was closed'));
    const session = this.connect();
    session.ref();
    this.active += 1;
    return new Promise<UnaryOutcome>((resolve) => {
      let settled = false;
      const chunks: Buffer[] = [];
      let received = 0;
      const maxBytes = this.target.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
      let headers: http2.IncomingHttpHeaders | undefined;
      let trailers: http2.IncomingHttpHeaders | undefined;
      const settle = (outcome: UnaryOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.active -= 1;
        if (this.active === 0 && !session.destroyed) session.unref();
        resolve(outcome);
      };
      const stream = session.request({
        ':method': 'POST',
        ':path': path,
        ':authority': this.target.serverName,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': `${Math.max(1, Math.ceil(deadlineMs))}m`,
        'user-agent': 'kubetrust-controller',
      });
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        settle(failure(GrpcStatus.DEADLINE_EXCEEDED, `Deadline exceeded after ${deadlineMs} ms`));
      }, deadlineMs);
      stream.on('response', (responseHeaders) => (headers = responseHeaders));
      stream.on('trailers', (trailerHeaders) => (trailers = trailerHeaders));
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received <= maxBytes + MESSAGE_PREFIX_BYTES) {
          chunks.push(chunk);
          return;
        }
        stream.close(http2.constants.NGHTTP2_CANCEL);
        settle(failure(GrpcStatus.RESOURCE_EXHAUSTED, `the response is larger than the limit of ${maxBytes} bytes`));
      });
      let streamError: Error | undefined;
      // The close handler below reports it, with the connection's error when there is one.
      stream.on('error', (error: Error) => (streamError = error));
      stream.on('close', () => {
        if (settled) return;
        // A failed connection cancels its pending streams with an error whose cause is the failure.
        const cause = streamError?.cause instanceof Error ? streamError.cause : streamError;
        const connectionError = this.sessionError ?? cause;
        if (headers === undefined) {
          const reason = connectionError?.message ?? `the stream closed with HTTP/2 code ${stream.rstCode ?? 'unknown'} before any response`;
          settle(failure(GrpcStatus.UNAVAILABLE, reason));
          return;
        }
        const httpStatus = Number(headers[':status']);
        if (httpStatus !== 200) {
          settle(failure(GrpcStatus.UNKNOWN, `the server answered with HTTP status ${httpStatus} instead of 200`));
          return;
        }
        // A call that fails before any message sends its status in the headers ("trailers only").
        const status = trailers?.['grpc-status'] ?? headers['grpc-status'];
        if (status === undefined) {
          settle(failure(GrpcStatus.INTERNAL, connectionError?.message ?? `the stream ended with HTTP/2 code ${stream.rstCode ?? 'unknown'} and no gRPC status`));
          return;
        }
        const code = Number(status) as GrpcStatus;
        const final = trailers ?? headers;
        if (code !== GrpcStatus.OK) {
          settle(failure(code, decodeMessage(final['grpc-message']), readMetadata(final)));
          return;
        }
        const message = readResponseMessage(Buffer.concat(chunks));
        settle(typeof message === 'string' ? failure(GrpcStatus.INTERNAL, message) : { message });
      });
      const prefix = Buffer.alloc(MESSAGE_PREFIX_BYTES);
      prefix.writeUInt32BE(request.length, 1);
      stream.end(Buffer.concat([prefix, request]));
    });
  }

  /** Closes the connection once its calls have finished. Later calls fail. */
  close(): void {
    this.closed = true;
    this.session?.close();
  }
}
