/**
 * The agent's service restarts: which health check gates a restart (agent.yaml, else the
 * controller's default, or none), and how the default checks of a request are validated.
 */
import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import type { ServiceHooks } from '@kubetrust/agent';
import { InvalidRequestError } from '@kubetrust/agent/dist/errors';
import { defaultHealthChecks, restartService } from '@kubetrust/agent/dist/services';
import type { DefaultHealthCheck__Output } from '@kubetrust/proto';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { freePort } from '../harness/local-cluster';

const ROOT = '/var/lib/test-root';

function check(fields: Partial<DefaultHealthCheck__Output> = {}): DefaultHealthCheck__Output {
  return {
    service: 'kube-apiserver',
    url: 'https://127.0.0.1:6443/readyz',
    ca_file: '/etc/kubernetes/pki/ca.crt',
    cert_file: '/etc/kubernetes/pki/apiserver-kubelet-client.crt',
    key_file: '/etc/kubernetes/pki/apiserver-kubelet-client.key',
    ...fields,
  };
}

describe('agent default health checks', () => {
  it('puts their files below the install root', () => {
    const checks = defaultHealthChecks(ROOT, [check(), check({ service: 'etcd', url: 'https://127.0.0.1:2379/health', cert_file: '', key_file: '' })]);
    assert.deepEqual(checks.get('kube-apiserver'), {
      https: {
        url: 'https://127.0.0.1:6443/readyz',
        caFile: path.join(ROOT, 'etc/kubernetes/pki/ca.crt'),
        certFile: path.join(ROOT, 'etc/kubernetes/pki/apiserver-kubelet-client.crt'),
        keyFile: path.join(ROOT, 'etc/kubernetes/pki/apiserver-kubelet-client.key'),
      },
    });
    assert.deepEqual(checks.get('etcd'), { https: { url: 'https://127.0.0.1:2379/health', caFile: path.join(ROOT, 'etc/kubernetes/pki/ca.crt') } });
  });

  const invalid: [string, DefaultHealthCheck__Output[], RegExp][] = [
    ['an unknown service', [check({ service: 'sshd' })], /unknown service "sshd"/],
    ['a plain http URL', [check({ url: 'http://127.0.0.1:6443/readyz' })], /"http:\/\/127\.0\.0\.1:6443\/readyz" is not an https URL/],
    ['a relative CA path', [check({ ca_file: 'pki/ca.crt' })], /path "pki\/ca\.crt" is not absolute/],
    ['a path with ..', [check({ key_file: '/etc/../root/key' })], /contains "\.\."/],
    ['a certificate without key', [check({ key_file: '' })], /needs both cert_file and key_file/],
    ['one service twice', [check(), check()], /given twice/],
  ];
  for (const [name, checks, message] of invalid) {
    it(`rejects ${name}`, () => {
      assert.throws(() => defaultHealthChecks(ROOT, checks), (error: Error) => error instanceof InvalidRequestError && message.test(error.message));
    });
  }
});

describe('agent service restarts', function () {
  this.timeout(30_000);
  const restarted: ServiceHooks = { restart: { command: ['/bin/true'] }, timeoutSeconds: 1 };

  it('gates a service on its default check', async () => {
    // Nothing listens on this port, so the default check fails within the one-second timeout.
    const port = await freePort('127.0.0.1');
    const fallback = { tcp: { address: `127.0.0.1:${port}` } };
    const result = await restartService('kube-apiserver', restarted, silentLogger(), fallback);
    assert.equal(result.restarted, true);
    assert.equal(result.healthy, false);
    assert.equal(result.check, `default tcp 127.0.0.1:${port}`);
    assert.match(result.output ?? '', /ECONNREFUSED/);
  });

  it('prefers the check in agent.yaml', async () => {
    const result = await restartService('kube-apiserver', { ...restarted, health: { command: ['/bin/true'] } }, silentLogger(), { tcp: { address: '127.0.0.1:1' } });
    assert.deepEqual([result.healthy, result.check], [true, 'command /bin/true']);
  });

  it('skips the default with health none', async () => {
    const result = await restartService('kube-apiserver', { ...restarted, health: { none: true } }, silentLogger(), { tcp: { address: '127.0.0.1:1' } });
    assert.deepEqual([result.healthy, result.check], [true, 'none configured']);
  });
});
