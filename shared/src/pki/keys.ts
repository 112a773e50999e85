import * as crypto from 'node:crypto';

export const KEY_ALGORITHMS = ['RSA-2048', 'RSA-3072', 'RSA-4096', 'ECDSA-P256', 'ECDSA-P384'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

export interface KeyPair {
  readonly privateKey: crypto.KeyObject;
  readonly publicKey: crypto.KeyObject;
}

type KeyParameters =
  | { readonly type: 'rsa'; readonly modulusLength: number }
  | { readonly type: 'ec'; readonly namedCurve: string };

/** Key generation parameters, with curves under the OpenSSL names that Node reports. */
const KEY_PARAMETERS: Readonly<Record<KeyAlgorithm, KeyParameters>> = {
  'RSA-2048': { type: 'rsa', modulusLength: 2048 },
  'RSA-3072': { type: 'rsa', modulusLength: 3072 },
  'RSA-4096': { type: 'rsa', modulusLength: 4096 },
  'ECDSA-P256': { type: 'ec', namedCurve: 'prime256v1' },
  'ECDSA-P384': { type: 'ec', namedCurve: 'secp384r1' },
};

/** Generates a key pair on the libuv thread pool, so the event loop keeps running. */
export function generateKeyPair(algorithm: KeyAlgorithm): Promise<KeyPair> {
  const parameters: KeyParameters | undefined = KEY_PARAMETERS[algorithm];
  if (parameters === undefined) {
    const expected = KEY_ALGORITHMS.join(', ');
    return Promise.reject(new Error(`invalid key algorithm "${String(algorithm)}": expected one of ${expected}`));
  }

  return new Promise((resolve, reject) => {
    const onGenerated = (err: Error | null, publicKey: crypto.KeyObject, privateKey: crypto.KeyObject): void => {
      if (err) {
        reject(err);
      } else {
        resolve({ privateKey, publicKey });
      }
    };
    if (parameters.type === 'rsa') {
      crypto.generateKeyPair('rsa', { modulusLength: parameters.modulusLength }, onGenerated);
    } else {
      crypto.generateKeyPair('ec', { namedCurve: parameters.namedCurve }, onGenerated);
    }
  });
}

/**
 * Encodes a private key as PEM in the format that kubeadm writes: PKCS#1 "RSA PRIVATE KEY"
 * for RSA and SEC1 "EC PRIVATE KEY" for ECDSA.
 */
export function privateKeyToPem(key: crypto.KeyObject): string {
  if (key.type !== 'private') {
    throw new Error(`invalid key: expected a private key, got a ${key.type} key`);
  }
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return String(key.export({ type: 'pkcs1', format: 'pem' }));
    case 'ec':
      return String(key.export({ type: 'sec1', format: 'pem' }));
    default:
      throw new Error(`unsupported private key type "${String(key.asymmetricKeyType)}": expected rsa or ec`);
  }
}

/** Returns the public half of a public or private key. */
function publicKeyOf(key: crypto.KeyObject): crypto.KeyObject {
  if (key.type === 'public') {
    return key;
  }
  if (key.type === 'private') {
    return crypto.createPublicKey(key);
  }
  throw new Error('invalid key: expected a public or private key, got a secret key');
}

/** Encodes the public key (of a public or private key) as SubjectPublicKeyInfo DER. */
export function publicKeyToDer(key: crypto.KeyObject): Buffer {
  return publicKeyOf(key).export({ type: 'spki', format: 'der' });
}

/** Encodes the public key (of a public or private key) as SubjectPublicKeyInfo PEM "PUBLIC KEY". */
export function publicKeyToPem(key: crypto.KeyObject): string {
  return String(publicKeyOf(key).export({ type: 'spki', format: 'pem' }));
}

/** Parses an unencrypted PEM private key in PKCS#1, SEC1 or PKCS#8 format. */
export function loadPrivateKey(pem: string | Buffer): crypto.KeyObject {
  try {
    return crypto.createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(
      'invalid private key: expected an unencrypted PEM block "RSA PRIVATE KEY" (PKCS#1), ' +
        `"EC PRIVATE KEY" (SEC1) or "PRIVATE KEY" (PKCS#8): ${reason}`,
      { cause: err },
    );
  }
}

/** Hashes the SubjectPublicKeyInfo DER with SHA-256, so a private key and its public key give the same lowercase hex. */
export function publicKeySha256(key: crypto.KeyObject): string {
  return crypto.createHash('sha256').update(publicKeyToDer(key)).digest('hex');
}

/** Returns the algorithm of a key, or undefined for a key type, RSA size or curve outside KEY_ALGORITHMS. */
export function keyAlgorithmOf(key: crypto.KeyObject): KeyAlgorithm | undefined {
  const details = key.asymmetricKeyDetails;
  if (details === undefined) {
    return undefined;
  }
  return KEY_ALGORITHMS.find((algorithm) => {
    const parameters = KEY_PARAMETERS[algorithm];
    if (parameters.type !== key.asymmetricKeyType) {
      return false;
    }
    if (parameters.type === 'rsa') {
      return details.modulusLength === parameters.modulusLength;
    }
    return details.namedCurve === parameters.namedCurve;
  });
}
