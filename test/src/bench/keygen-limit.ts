#!/usr/bin/env node
/**
 * Measures this machine's native key-generation speed, the floor under any PKI tool that makes its
 * keys with Node. It reports the median time of one async `crypto.generateKeyPair` for RSA-2048 and
 * for ECDSA P-256. Keys are made one at a time, so each sample is one key on an idle thread pool.
 *
 *   node test/dist/bench/keygen-limit.js [--rsa-samples N] [--ec-samples N]
 *
 * The last line of output is `RESULT keygen-limit key=value...`; times are in milliseconds and
 * `cores` is os.availableParallelism().
 */
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const MAX_SAMPLES = 10_000;

function generate(type: 'rsa' | 'ec'): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error: Error | null): void => (error === null ? resolve() : reject(error));
    if (type === 'rsa') crypto.generateKeyPair('rsa', { modulusLength: 2048 }, done);
    else crypto.generateKeyPair('ec', { namedCurve: 'prime256v1' }, done);
  });
}

/** Times `samples` key generations one after another and returns each duration in milliseconds. */
async function sample(type: 'rsa' | 'ec', samples: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const start = performance.now();
    await generate(type);
    times.push(performance.now() - start);
  }
  return times;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

function count(value: string, option: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > MAX_SAMPLES) throw new Error(`${option}: "${value}" is invalid; pass an integer from 1 to ${MAX_SAMPLES}`);
  return parsed;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      // An RSA-2048 key takes from about 60 to 480 ms, and the median of 15 samples moved by 40 %
      // within one run; 41 samples take about 6 s.
      'rsa-samples': { type: 'string', default: '41' },
      'ec-samples': { type: 'string', default: '200' },
    },
  });
  let rsaSamples: number;
  let ecSamples: number;
  try {
    rsaSamples = count(values['rsa-samples'], '--rsa-samples');
    ecSamples = count(values['ec-samples'], '--ec-samples');
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 2;
  }

  // One untimed key of each type loads OpenSSL's code and tables before the samples.
  await generate('rsa');
  await generate('ec');
  const rsa = await sample('rsa', rsaSamples);
  const ec = await sample('ec', ecSamples);
  const fields = [
    `cores=${os.availableParallelism()}`,
    `rsa2048_samples=${rsa.length}`,
    `rsa2048_median_ms=${median(rsa).toFixed(1)}`,
    `rsa2048_mean_ms=${mean(rsa).toFixed(1)}`,
    `rsa2048_min_ms=${Math.min(...rsa).toFixed(1)}`,
    `rsa2048_max_ms=${Math.max(...rsa).toFixed(1)}`,
    `p256_samples=${ec.length}`,
    `p256_median_ms=${median(ec).toFixed(3)}`,
    `p256_mean_ms=${mean(ec).toFixed(3)}`,
  ];
  process.stdout.write(`RSA-2048 samples (ms): ${rsa.map((value) => value.toFixed(0)).join(' ')}\n`);
  process.stdout.write(`RESULT keygen-limit ${fields.join(' ')}\n`);
  return 0;
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = code;
  });
}
