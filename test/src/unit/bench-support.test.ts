import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { EVENT_LOOP_REPORT_ENV } from '@kubetrust/controller/dist/event-loop-report';
import { BenchError, DEFAULT_SUBNETS, controllerEnvironment, extraCaCerts, inventoryYaml, maxWorkers, parseSubnets, staleBundleMessage, workerAddress } from '../bench/bench-support';

describe('benchmark loopback networks', () => {
  it('keeps the default addresses', () => {
    assert.equal(maxWorkers(), 1016);
    assert.equal(workerAddress(1), '127.0.31.1');
    assert.equal(workerAddress(254), '127.0.31.254');
    assert.equal(workerAddress(255), '127.0.32.1');
    assert.equal(workerAddress(1016), '127.0.34.254');
    assert.throws(() => workerAddress(1017), RangeError);
  });

  it('parses a network range', () => {
    assert.deepEqual(parseSubnets('57-58', '--subnets'), { first: 57, last: 58 });
    assert.deepEqual(parseSubnets('30-34', '--subnets'), DEFAULT_SUBNETS);
    for (const text of ['58-57', '57-57', '0-3', '57-256', '57', '57-58-59', 'a-b', '']) {
      assert.throws(() => parseSubnets(text, '--subnets'), BenchError, text);
    }
  });

  it('puts every node in the chosen networks', () => {
    const subnets = parseSubnets('57-58', '--subnets');
    assert.equal(maxWorkers(subnets), 254);
    assert.equal(workerAddress(254, subnets), '127.0.58.254');
    assert.throws(() => workerAddress(255, subnets), RangeError);

    const inventory = parseInventory(inventoryYaml(194, 'ECDSA-P256', subnets), 'bench.yaml').inventory;
    assert.equal(inventory.nodes.length, 200);
    const addresses = inventory.nodes.flatMap((node) => node.addresses);
    assert.equal(new Set(addresses).size, 200);
    for (const address of addresses) assert.match(address, /^127\.0\.5[78]\.\d+$/);
    assert.equal(inventory.nodes.find((node) => node.name === 'master-1')?.addresses[0], '127.0.57.21');
  });
});

describe('benchmark preflight', () => {
  it('rejects a bundle older than its inputs', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-bundle-'));
    try {
      const input = path.join(dir, 'cli.js');
      fs.writeFileSync(input, 'module.exports = {};\n');
      const stat = fs.statSync(input);
      const manifest = path.join(dir, 'cli.bundle.json');
      fs.writeFileSync(manifest, JSON.stringify({ version: 1, root: '.', inputs: [['cli.js', stat.size, stat.mtimeMs]] }));
      assert.equal(staleBundleMessage(manifest), undefined);
      fs.utimesSync(input, new Date(), new Date(stat.mtimeMs + 5000));
      assert.match(staleBundleMessage(manifest) ?? '', /is missing or older than the files it was built from; run `npm run build`/);
      fs.rmSync(manifest);
      assert.match(staleBundleMessage(manifest) ?? '', /cli\.bundle\.json\) is missing/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('finds the built bundle current', () => {
    assert.equal(staleBundleMessage(), undefined);
  });
});

describe('benchmark controller environment', () => {
  const env = { PATH: '/usr/bin', NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt' };

  it('drops NODE_EXTRA_CA_CERTS unless kept', () => {
    const removed = controllerEnvironment('/tmp/report.json', false, env);
    assert.equal(removed.NODE_EXTRA_CA_CERTS, undefined);
    assert.equal(removed.PATH, '/usr/bin');
    assert.equal(removed[EVENT_LOOP_REPORT_ENV], '/tmp/report.json');
    assert.equal(env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt', 'the environment passed in was changed');
    assert.equal(controllerEnvironment('/tmp/report.json', true, env).NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt');
  });

  it('reports removed, kept or unset', () => {
    assert.equal(extraCaCerts(false, env), 'removed');
    assert.equal(extraCaCerts(true, env), 'kept');
    assert.equal(extraCaCerts(true, { PATH: '/usr/bin' }), 'unset');
    assert.equal(extraCaCerts(false, { NODE_EXTRA_CA_CERTS: '' }), 'unset');
  });
});
