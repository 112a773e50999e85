/**
 * The agent message codec against protobufjs, the library proto-loader uses: for random messages of
 * every type in agent.proto, the codec must write the same bytes as protobufjs and decode any bytes
 * to the same object that proto-loader's options give. The service definition must match
 * proto-loader's, so that either side of a call may use either implementation.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';
import { CodecError, agentCodec, loadAgentProto } from '@kubetrust/proto';
import { seededRandom } from '../harness/seeded-random';

const AGENT_PROTO_PATH = require.resolve('@kubetrust/proto/kubetrust/agent/v1/agent.proto');
const PACKAGE = 'kubetrust.agent.v1';
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const TO_OBJECT_OPTIONS: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, oneofs: true };
const SAMPLES_PER_TYPE = 300;
const SEED = 0x6b756265;

const root = protobuf.parse(fs.readFileSync(AGENT_PROTO_PATH, 'utf8'), { keepCase: true }).root;
root.resolveAll();
const namespace = root.lookup(PACKAGE) as protobuf.Namespace;
const messageTypes = namespace.nestedArray.filter((item): item is protobuf.Type => item instanceof protobuf.Type);

class Sampler {
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  integer(below: number): number {
    return Math.floor(this.random() * below);
  }

  pick<T>(values: readonly T[]): T {
    return values[this.integer(values.length)] as T;
  }

  string(): string {
    const pieces = ['', 'a', 'etcd-1', '10.0.0.1', 'ü', '节点', '😀', '/etc/kubernetes/pki/ca.crt', 'x'.repeat(200)];
    let text = '';
    const count = this.integer(4);
    for (let index = 0; index < count; index++) text += this.pick(pieces);
    return text;
  }

  bytes(): Buffer | Uint8Array | string {
    const length = this.pick([0, 1, 5, 127, 128, 300, 20_000]);
    const data = Buffer.alloc(length);
    for (let index = 0; index < length; index++) data[index] = this.integer(256);
    switch (this.integer(4)) {
      case 0:
        return new Uint8Array(data);
      case 1:
        return data.toString('base64');
      default:
        return data;
    }
  }

  uint32(): number | string {
    return this.pick<number | string>([0, 1, 127, 128, 0o600, 0o644, 65_534, 2 ** 31, 2 ** 32 - 1, -1, 3.7, '42']);
  }

  enumValue(type: protobuf.Enum): string | number {
    const names = Object.keys(type.values);
    return this.pick<string | number>([...names, 0, 1, 4, 7, -1, 'NOT_A_NAME']);
  }

  value(field: protobuf.Field): unknown {
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Type) return this.message(resolved, 1);
    if (resolved instanceof protobuf.Enum) return this.enumValue(resolved);
    switch (field.type) {
      case 'string':
        return this.string();
      case 'bytes':
        return this.bytes();
      case 'bool':
        return this.pick([true, false]);
      case 'uint32':
        return this.uint32();
      default:
        throw new Error(`no sample for field type ${field.type}`);
    }
  }

  message(type: protobuf.Type, depth = 0): Record<string, unknown> {
    const message: Record<string, unknown> = {};
    const chosen = new Map<string, string>();
    for (const oneof of type.oneofsArray) {
      if (this.integer(4) > 0) chosen.set(oneof.name, this.pick(oneof.oneof));
    }
    for (const field of type.fieldsArray) {
      if (field.partOf !== null && field.partOf !== undefined) {
        if (chosen.get(field.partOf.name) === field.name) message[field.name] = this.value(field);
        continue;
      }
      const roll = this.integer(10);
      if (roll === 0) continue;
      if (roll === 1) {
        message[field.name] = this.pick([null, undefined]);
        continue;
      }
      if (field.repeated) {
        if (depth > 1) continue;
        const items: unknown[] = [];
        const count = this.integer(4);
        for (let index = 0; index < count; index++) items.push(this.value(field));
        message[field.name] = items;
      } else {
        message[field.name] = this.value(field);
      }
    }
    return message;
  }
}

function protobufjsEncode(type: protobuf.Type, message: Record<string, unknown>): Buffer {
  return Buffer.from(type.encode(type.fromObject(message)).finish());
}

function protobufjsDecode(type: protobuf.Type, bytes: Buffer): unknown {
  return type.toObject(type.decode(bytes), TO_OBJECT_OPTIONS);
}

describe('agent message codec', () => {
  it('covers every message of agent.proto', () => {
    for (const type of messageTypes) {
      assert.doesNotThrow(() => agentCodec.decode(type.name, Buffer.alloc(0)), `no schema for ${type.name}`);
    }
    assert.ok(messageTypes.some((type) => type.name === 'FileChange'), 'agent.proto was not parsed');
  });

  for (const type of messageTypes) {
    it(`${type.name} matches protobufjs both ways`, () => {
      const sampler = new Sampler(SEED ^ type.name.length * 7919);
      for (let sample = 0; sample < SAMPLES_PER_TYPE; sample++) {
        const message = sampler.message(type);
        const expected = protobufjsEncode(type, message);
        const actual = agentCodec.encode(type.name, message);
        assert.ok(actual.equals(expected), `${type.name} sample ${sample}: ${actual.toString('hex')} != ${expected.toString('hex')}`);
        assert.deepStrictEqual(agentCodec.decode(type.name, expected), protobufjsDecode(type, expected), `${type.name} sample ${sample}`);
      }
    });
  }

  it('decodes the defaults of an empty message the way proto-loader does', () => {
    assert.deepStrictEqual(agentCodec.decode('FileChange', Buffer.alloc(0)), { path: '', mode: 0, uid: 0, gid: 0 });
    assert.deepStrictEqual(agentCodec.decode('FileQuery', Buffer.alloc(0)), { path: '', kind: 'FILE_KIND_UNSPECIFIED' });
    const state = agentCodec.decode('FileState', Buffer.alloc(0));
    assert.deepStrictEqual(state.content, Buffer.alloc(0));
    assert.equal(state.kubeconfig, null);
  });

  it('oneof with an empty member', () => {
    const bytes = agentCodec.encode('FileChange', { path: '/a', data: Buffer.alloc(0) });
    assert.deepStrictEqual(agentCodec.decode('FileChange', bytes), { path: '/a', mode: 0, uid: 0, gid: 0, data: Buffer.alloc(0), content: 'data' });
  });

  it('skips fields it does not know, of every wire type', () => {
    const type = root.lookupType(`${PACKAGE}.RollbackRequest`);
    const known = agentCodec.encode('RollbackRequest', { change_id: 'c-1', allow_removing_all: true });
    const unknown = Buffer.from([
      0x98, 0x06, 0x96, 0x01, // field 99, varint 150
      0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, // field 100, fixed64
      0xaa, 0x06, 0x03, 0x61, 0x62, 0x63, // field 101, length-delimited "abc"
      0xb5, 0x06, 1, 2, 3, 4, // field 102, fixed32
    ]);
    const bytes = Buffer.concat([unknown, known]);
    assert.deepStrictEqual(agentCodec.decode('RollbackRequest', bytes), protobufjsDecode(type, bytes));
    assert.deepStrictEqual(agentCodec.decode('RollbackRequest', bytes), { change_id: 'c-1', allow_removing_all: true, default_health_checks: [] });
  });

  it('invalid input names the field', () => {
    const bytes = agentCodec.encode('RollbackRequest', { change_id: 'change-1' });
    assert.throws(() => agentCodec.decode('RollbackRequest', bytes.subarray(0, bytes.length - 2)), CodecError);
    // Field 1 (change_id, a string) sent as a varint.
    assert.throws(() => agentCodec.decode('RollbackRequest', Buffer.from([0x08, 0x01])), /RollbackRequest\.change_id: wire type 0/);
    assert.throws(() => agentCodec.encode('FileChange', { kubeconfig: 'server' }), /FileChange\.kubeconfig: object expected/);
    assert.throws(() => agentCodec.encode('ApplyRequest', { files: { path: '/a' } }), /ApplyRequest\.files: array expected/);
    assert.throws(() => agentCodec.encode('FileChange', { data: 42 }), /FileChange\.data: bytes expected/);
    assert.throws(() => agentCodec.encode('NoSuchMessage', {}), /unknown message type NoSuchMessage/);
  });

  it('gives the service the paths, method names and codecs of proto-loader', () => {
    const definition = protoLoader.loadSync(AGENT_PROTO_PATH, LOADER_OPTIONS)[`${PACKAGE}.Agent`] as protoLoader.ServiceDefinition;
    const service = loadAgentProto().kubetrust.agent.v1.Agent.service;
    assert.deepStrictEqual(Object.keys(service).sort(), Object.keys(definition).sort());
    const sampler = new Sampler(SEED);
    for (const [name, theirs] of Object.entries(definition)) {
      const ours = service[name as keyof typeof service];
      assert.ok(ours !== undefined, `the service has no method ${name}`);
      assert.equal(ours.path, theirs.path);
      assert.equal(ours.originalName, theirs.originalName);
      assert.equal(ours.requestStream, theirs.requestStream);
      assert.equal(ours.responseStream, theirs.responseStream);
      const requestType = root.lookupType(`${PACKAGE}.${(theirs.requestType.type as { name: string }).name}`);
      const responseType = root.lookupType(`${PACKAGE}.${(theirs.responseType.type as { name: string }).name}`);
      for (let sample = 0; sample < 50; sample++) {
        const request = sampler.message(requestType);
        const response = sampler.message(responseType);
        const requestBytes = theirs.requestSerialize(request);
        const responseBytes = theirs.responseSerialize(response);
        assert.ok((ours.requestSerialize as (value: unknown) => Buffer)(request).equals(requestBytes), `${name} request ${sample}`);
        assert.ok((ours.responseSerialize as (value: unknown) => Buffer)(response).equals(responseBytes), `${name} response ${sample}`);
        assert.deepStrictEqual(ours.requestDeserialize(requestBytes), theirs.requestDeserialize(requestBytes));
        assert.deepStrictEqual(ours.responseDeserialize(responseBytes), theirs.responseDeserialize(responseBytes));
      }
    }
  });
});
