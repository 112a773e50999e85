/**
 * Approval of kubelet serving CSRs: each rule of decideServingCsr with a CSR that passes and one
 * that fails, and the approver over a list and a watch of the in-memory KubeClient.
 */
import { strict as assert } from 'node:assert';
import {
  APPROVAL_REASON,
  KUBELET_SERVING_SIGNER,
  KubeApiError,
  approveServingCsrs,
  csrPhase,
  decideServingCsr,
  watchRetryDelay,
  watchServingCsrs,
  type CsrObject,
  type ServingCsrResult,
} from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { createCsr, generateKeyPair, type KeyPair } from '@kubetrust/shared/dist/pki';
import { MemoryKubeClient } from '../harness/memory-kube-client';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: prod}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: worker-1, addresses: [192.0.2.21], roles: [worker]}
    - name: worker-2
      addresses: [192.0.2.22, "2001:db8::22"]
      hostnames: [worker-2.prod.example]
      roles: [worker]
`;

const SERVING_USAGES = ['digital signature', 'server auth'];

interface CsrOptions {
  readonly node?: string;
  readonly username?: string;
  readonly groups?: readonly string[];
  readonly commonName?: string;
  readonly organizations?: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
  readonly usages?: readonly string[];
  readonly signerName?: string;
  readonly key?: KeyPair;
  readonly base64?: boolean;
  readonly name?: string;
}

describe('kubelet serving CSR approval', () => {
  let inventory: Inventory;
  let ecKey: KeyPair;
  let rsaKey: KeyPair;

  before(async () => {
    inventory = parseInventory(INVENTORY, 'unit.yaml').inventory;
    ecKey = await generateKeyPair('ECDSA-P256');
    rsaKey = await generateKeyPair('RSA-2048');
  });

  /** Builds a CSR as worker-2's kubelet files it, with fields overridden by `options`. */
  function servingCsr(options: CsrOptions = {}): CsrObject {
    const node = options.node ?? 'worker-2';
    const pem = createCsr(
      {
        commonName: options.commonName ?? `system:node:${node}`,
        organizations: options.organizations ?? ['system:nodes'],
        dnsNames: options.dnsNames ?? [node],
        ipAddresses: options.ipAddresses ?? ['192.0.2.22'],
        uris: options.uris ?? [],
      },
      options.key ?? ecKey,
    );
    return {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name: options.name ?? `csr-${node}` },
      spec: {
        signerName: options.signerName ?? KUBELET_SERVING_SIGNER,
        request: options.base64 === false ? pem : Buffer.from(pem).toString('base64'),
        usages: options.usages ?? SERVING_USAGES,
        username: options.username ?? `system:node:${node}`,
        groups: options.groups ?? ['system:nodes', 'system:authenticated'],
      },
    };
  }

  function reasonsOf(csr: CsrObject): readonly string[] {
    const decision = decideServingCsr(csr, inventory);
    return decision.approve ? [] : decision.reasons;
  }

  function assertApproved(csr: CsrObject): void {
    const decision = decideServingCsr(csr, inventory);
    assert.equal(decision.approve, true, decision.approve ? '' : decision.reasons.join('; '));
  }

  function assertReason(csr: CsrObject, expected: string): void {
    const reasons = reasonsOf(csr);
    assert.ok(reasons.includes(expected), `expected "${expected}" in: ${reasons.join('; ') || '(approved)'}`);
  }

  describe('approves', () => {
    it('CSR for the node\'s name and address', () => {
      const decision = decideServingCsr(servingCsr(), inventory);
      assert.equal(decision.approve, true);
      assert.equal(decision.node, 'worker-2');
      assert.match(decision.approve ? decision.message : '', /worker-2/);
    });

    it('CSR with every name and address of the node', () => {
      assertApproved(servingCsr({ dnsNames: ['worker-2', 'worker-2.prod.example'], ipAddresses: ['192.0.2.22', '2001:db8:0::22'] }));
    });

    it('CSR with only an IP address', () => {
      assertApproved(servingCsr({ dnsNames: [], ipAddresses: ['2001:db8::22'] }));
    });

    it('request given as PEM instead of base64', () => {
      assertApproved(servingCsr({ base64: false }));
    });

    it('usages in any order', () => {
      assertApproved(servingCsr({ usages: ['server auth', 'digital signature'] }));
    });

    it('key encipherment with an RSA key', () => {
      assertApproved(servingCsr({ key: rsaKey, usages: ['key encipherment', 'server auth', 'digital signature'] }));
      assertApproved(servingCsr({ key: rsaKey }));
    });
  });

  describe('leaves pending', () => {
    it('CSR with an IP that is not the node\'s', () => {
      assertReason(servingCsr({ ipAddresses: ['192.0.2.22', '198.51.100.7'] }), 'IP 198.51.100.7 is not an address of worker-2 in the inventory');
    });

    it('CSR with a DNS name that is not the node\'s', () => {
      assertReason(servingCsr({ dnsNames: ['worker-2', 'kubernetes.default'] }), 'DNS name kubernetes.default is not a name of worker-2 in the inventory');
    });

    it('CSR from a node not in the inventory', () => {
      assertReason(servingCsr({ node: 'worker-9' }), 'node worker-9 is not in the inventory');
    });

    it('CSR with client auth', () => {
      assertReason(servingCsr({ usages: ['digital signature', 'server auth', 'client auth'] }), 'usage client auth is not allowed for a serving certificate');
    });

    it('CSR without server auth', () => {
      assertReason(servingCsr({ usages: ['digital signature'] }), 'usage server auth is missing');
    });

    it('CSR with key encipherment for an ECDSA key', () => {
      const reasons = reasonsOf(servingCsr({ usages: ['digital signature', 'key encipherment', 'server auth'] }));
      assert.ok(reasons.some((reason) => reason.startsWith('usage key encipherment is allowed only for an RSA key')), reasons.join('; '));
    });

    it('CSR from a user who is not a node', () => {
      assertReason(servingCsr({ username: 'system:bootstrap:abcdef' }), 'requester system:bootstrap:abcdef is not a node: expected system:node:<name>');
    });

    it('CSR from a node user outside system:nodes', () => {
      assertReason(servingCsr({ groups: ['system:authenticated'] }), 'requester system:node:worker-2 is not in group system:nodes');
    });

    it('CSR requested by one node for another', () => {
      assertReason(servingCsr({ username: 'system:node:worker-1' }), 'subject CN "system:node:worker-2" is not "system:node:worker-1"');
    });

    it('CSR whose subject organization is not system:nodes', () => {
      assertReason(servingCsr({ organizations: ['system:masters'] }), 'subject O is "system:masters", expected exactly "system:nodes"');
      assertReason(servingCsr({ organizations: ['system:nodes', 'system:masters'] }), 'subject O is "system:nodes, system:masters", expected exactly "system:nodes"');
    });

    it('CSR with no DNS name or IP address', () => {
      assertReason(servingCsr({ dnsNames: [], ipAddresses: [] }), 'the request has no DNS name or IP address');
    });

    it('CSR with a URI', () => {
      assertReason(servingCsr({ uris: ['spiffe://prod/worker-2'] }), 'URI spiffe://prod/worker-2 is not allowed in a serving certificate');
    });

    it('CSR of another signer', () => {
      assertReason(servingCsr({ signerName: 'kubernetes.io/kube-apiserver-client-kubelet' }), 'signer kubernetes.io/kube-apiserver-client-kubelet is not kubernetes.io/kubelet-serving');
    });

    it('CSR whose request does not parse', () => {
      const csr = servingCsr();
      const reasons = reasonsOf({ ...csr, spec: { ...csr.spec, request: Buffer.from('not a CSR').toString('base64') } });
      assert.ok(reasons.some((reason) => reason.startsWith('the request is not a valid CSR')), reasons.join('; '));
    });
  });

  describe('approver', () => {
    it('approves passing CSRs and leaves the others pending', async () => {
      const client = new MemoryKubeClient();
      client.addCsr(servingCsr({ name: 'good' }));
      client.addCsr(servingCsr({ name: 'rogue', ipAddresses: ['192.0.2.11'] }));
      client.addCsr({ ...servingCsr({ name: 'client', signerName: 'kubernetes.io/kube-apiserver-client-kubelet' }) });
      const now = new Date('2030-01-02T03:04:05Z');
      const results = await approveServingCsrs(client, inventory, { now: () => now });
      assert.deepEqual(results.map((result) => `${result.name}:${result.outcome}`), ['good:approved', 'rogue:pending']);
      assert.deepEqual(results[1]?.reasons, ['IP 192.0.2.11 is not an address of worker-2 in the inventory']);

      const approved = client.csrs.get('good');
      const condition = approved?.status?.conditions?.[0];
      assert.equal(condition?.type, 'Approved');
      assert.equal(condition?.status, 'True');
      assert.equal(condition?.reason, APPROVAL_REASON);
      assert.match(condition?.message ?? '', /worker-2/);
      assert.equal(condition?.lastUpdateTime, '2030-01-02T03:04:05Z');
      assert.equal(csrPhase(client.csrs.get('rogue')!), 'pending');
      assert.equal(client.calls.filter((call) => call.startsWith('updateCsrApproval')).length, 1);
    });

    it('skips CSRs that are no longer pending', async () => {
      const client = new MemoryKubeClient();
      const denied = servingCsr({ name: 'denied' });
      client.addCsr({ ...denied, status: { conditions: [{ type: 'Denied', status: 'True', reason: 'ByHand' }] } });
      const results = await approveServingCsrs(client, inventory);
      assert.deepEqual(results.map((result) => `${result.outcome}:${result.phase}`), ['skipped:denied']);
      assert.ok(!client.calls.some((call) => call.startsWith('updateCsrApproval')));
    });

    it('reports a failed approval call and keeps the CSR pending', async () => {
      const client = new MemoryKubeClient();
      client.addCsr(servingCsr({ name: 'stale' }));
      const [csr] = await client.listCsrs(KUBELET_SERVING_SIGNER);
      client.csrs.set('stale', { ...csr!, metadata: { ...csr!.metadata, resourceVersion: '999' } });
      client.listCsrs = async () => [csr!];
      const results = await approveServingCsrs(client, inventory);
      assert.equal(results[0]?.outcome, 'pending');
      assert.match(results[0]?.reasons[0] ?? '', /^approval failed: .*modified/);
    });
  });

  describe('kubectl logs fails while serving CSRs stay Pending', () => {
    it('watch approves each node\'s CSR and reports the rogue one', async () => {
      const client = new MemoryKubeClient();
      const results: ServingCsrResult[] = [];
      client.addCsr(servingCsr({ name: 'early', node: 'worker-1', ipAddresses: ['192.0.2.21'] }));
      const watch = await watchServingCsrs(client, inventory, { onResult: (result) => results.push(result) });
      try {
        client.addCsr(servingCsr({ name: 'late' }));
        client.addCsr(servingCsr({ name: 'rogue', ipAddresses: ['192.0.2.22', '192.0.2.11'] }));
        await new Promise((resolve) => setTimeout(resolve, 50));
      } finally {
        watch.stop();
      }
      assert.deepEqual(results.map((result) => `${result.name}:${result.outcome}`), ['early:approved', 'late:approved', 'rogue:pending']);
      assert.deepEqual(results[2]?.reasons, ['IP 192.0.2.11 is not an address of worker-2 in the inventory']);
      const pending = [...client.csrs.values()].filter((csr) => csrPhase(csr) === 'pending').map((csr) => csr.metadata.name);
      assert.deepEqual(pending, ['rogue']);
      assert.ok(results.some((result) => result.name === 'rogue'), 'every pending CSR is reported');
    });

    it('watch reports a pending CSR once across reconnects', async () => {
      const client = new MemoryKubeClient();
      const results: ServingCsrResult[] = [];
      const connections: boolean[] = [];
      client.addCsr(servingCsr({ name: 'rogue', ipAddresses: ['192.0.2.22', '192.0.2.11'] }));
      const watch = await watchServingCsrs(client, inventory, { onResult: (result) => results.push(result), onConnection: (connected) => connections.push(connected) });
      await client.breakWatches(new Error('connection reset'));
      await client.breakWatches(new Error('connection reset'));
      client.addCsr(servingCsr({ name: 'late' }));
      await watch.stop();
      assert.deepEqual(results.map((result) => `${result.name}:${result.outcome}`), ['rogue:pending', 'late:approved']);
      assert.deepEqual(connections, [true, false, true, false, true]);
      assert.equal(client.calls.filter((call) => call.startsWith('updateCsrApproval')).length, 1, 'the rogue CSR is not retried');
    });

    it('watch retries a failed approval call', async () => {
      const client = new MemoryKubeClient();
      const results: ServingCsrResult[] = [];
      const approve = client.updateCsrApproval.bind(client);
      let failures = 0;
      client.updateCsrApproval = async (csr) => {
        if (failures < 2) {
          failures += 1;
          throw new KubeApiError(503, 'ServiceUnavailable', 'approve CertificateSigningRequest failed: the server is shutting down');
        }
        return approve(csr);
      };
      client.addCsr(servingCsr({ name: 'retried' }));
      const watch = await watchServingCsrs(client, inventory, { onResult: (result) => results.push(result), watch: { retryBaseMs: 1, retryMaxMs: 2 } });
      try {
        while (csrPhase(client.csrs.get('retried')!) === 'pending') await new Promise((resolve) => setTimeout(resolve, 5));
      } finally {
        await watch.stop();
      }
      assert.equal(failures, 2);
      assert.deepEqual(results.map((result) => `${result.name}:${result.outcome}`), ['retried:approved'], 'a failed call is not reported as a decision');
    });

    it('retry delay doubles up to the maximum', () => {
      assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 40].map((failures) => watchRetryDelay(failures, 1_000, 30_000)), [0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
    });

    it('stopped watch approves nothing more', async () => {
      const client = new MemoryKubeClient();
      const watch = await watchServingCsrs(client, inventory);
      watch.stop();
      client.addCsr(servingCsr({ name: 'after' }));
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(csrPhase(client.csrs.get('after')!), 'pending');
    });
  });
});
