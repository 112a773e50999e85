/**
 * Reads the rotation daemon's HTTP endpoints (/metrics, /healthz) the way a Prometheus scraper
 * does, and picks single samples out of the text exposition format.
 */
import * as http from 'node:http';

/** GETs `url` from host:port; resolves with the status code and the body, rejects on a connection error. */
export function httpGet(host: string, port: number, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path: url, timeout: 5_000 }, (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/**
 * Returns the value of the first sample of `name` whose labels start with `labels` (such as
 * `node="etcd-1",certificate="etcd-server"`), or of the sample without labels when `labels` is empty.
 */
export function metricValue(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}${labels ? `{${labels}` : ' '}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}
