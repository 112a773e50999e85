import { strict as assert } from 'node:assert';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { BenchError, DEFAULT_SUBNETS, inventoryYaml, maxWorkers, parseSubnets, workerAddress } from '../bench/bench-support';

describe('benchmark addresses', () => {
  it('default layout unchanged', () => {
    assert.equal(workerAddress(1), '127.0.31.1');
    assert.equal(workerAddress(255), '127.0.32.1');
    assert.equal(maxWorkers(DEFAULT_SUBNETS), 1016);
    assert.match(inventoryYaml(1, 'ECDSA-P256'), /etcd-1, addresses: \[127\.0\.30\.11\]/);
  });

  it('subnets option moves every node', () => {
    const subnets = parseSubnets('127.0.55,127.0.56', '--subnets');
    assert.equal(maxWorkers(subnets), 254);
    assert.equal(workerAddress(254, subnets), '127.0.56.254');
    assert.throws(() => workerAddress(255, subnets), RangeError);
    const inventory = parseInventory(inventoryYaml(194, 'ECDSA-P256', subnets), 'bench.yaml').inventory;
    assert.equal(inventory.nodes.length, 200);
    const addresses = inventory.nodes.flatMap((node) => node.addresses);
    assert.ok(addresses.every((address) => address.startsWith('127.0.55.') || address.startsWith('127.0.56.')), addresses.join(' '));
  });

  it('subnets option rejects bad input', () => {
    for (const bad of ['127.0.55', '10.0.0,10.0.1', '127.0.55,127.0.256', '127.0.55,127.0.55', '127.0.55.0,127.0.56']) {
      assert.throws(() => parseSubnets(bad, '--subnets'), BenchError, bad);
    }
  });
});
