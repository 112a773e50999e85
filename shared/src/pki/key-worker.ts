/**
 * Worker thread of KeyPool: generates key pairs on request and returns each as the public key's
 * SubjectPublicKeyInfo DER and the private key's PEM, so the main thread never parses a key.
 */
import * as crypto from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import type { KeyGenerationRequest, KeyGenerationResult } from './key-pool';

const { parameters } = workerData as { parameters: { type: 'rsa'; modulusLength: number } | { type: 'ec'; namedCurve: string } };
const port = parentPort;
if (port === null) throw new Error('key-worker.js runs only as a worker thread of KeyPool');

function generate(): { spki: Buffer; privateKeyPem: string } {
  const publicKeyEncoding = { type: 'spki', format: 'der' } as const;
  if (parameters.type === 'rsa') {
    const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: parameters.modulusLength, publicKeyEncoding, privateKeyEncoding: { type: 'pkcs1', format: 'pem' } });
    return { spki: publicKey, privateKeyPem: privateKey };
  }
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: parameters.namedCurve, publicKeyEncoding, privateKeyEncoding: { type: 'sec1', format: 'pem' } });
  return { spki: publicKey, privateKeyPem: privateKey };
}

port.on('message', (request: KeyGenerationRequest) => {
  const keys: KeyGenerationResult['keys'][number][] = [];
  for (let index = 0; index < request.count; index++) keys.push(generate());
  const result: KeyGenerationResult = { keys };
  port.postMessage(result);
});
