/**
 * Kubeconfig rendering: the template used for plain values must give the bytes that YAML.stringify
 * gives for the same document, and values that YAML has to quote must still come out quoted.
 */
import { strict as assert } from 'node:assert';
import * as YAML from 'yaml';
import { parseKubeconfig, renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';

const pem = (label: string, body: string): string => `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
const b64 = (text: string): string => Buffer.from(text).toString('base64');

function reference(clusterName: string, server: string, user: string, ca: string, certificate: string, key: string): string {
  const context = `${user}@${clusterName}`;
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: clusterName, cluster: { 'certificate-authority-data': b64(ca), server } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(certificate), 'client-key-data': b64(key) } }],
    contexts: [{ name: context, context: { cluster: clusterName, user } }],
    'current-context': context,
  });
}

describe('kubeconfig rendering', () => {
  const ca = pem('CERTIFICATE', 'Q0E='.repeat(100));
  const certificate = pem('CERTIFICATE', 'bGVhZg=='.repeat(120));
  const key = pem('EC PRIVATE KEY', 'a2V5'.repeat(40));
  const cases: [string, string, string][] = [
    ['prod', 'https://192.0.2.100:6443', 'system:node:worker-1'],
    ['bench', 'https://127.0.30.100:6443', 'system:kube-proxy'],
    ['dual', 'https://[2001:db8::10]:6443', 'kubernetes-admin'],
    ['123', 'https://api.example.com:6443', 'system:kube-scheduler'],
    ['true', 'https://api.example.com:6443', 'null'],
    ['team a', 'https://api.example.com:6443#x', 'user: with colon'],
    ['c', 'https://api.example.com:6443', "it's"],
  ];
  for (const [clusterName, server, user] of cases) {
    it(`renders cluster "${clusterName}", user "${user}" as YAML.stringify does`, () => {
      const text = renderKubeconfig({ clusterName, server, certificateAuthorityPem: ca, user, clientCertificatePem: certificate, clientKeyPem: key });
      assert.equal(text, reference(clusterName, server, user, ca, certificate, key));
      const parsed = parseKubeconfig(text);
      assert.equal(parsed.server, server);
      assert.equal(parsed.user, user);
      assert.equal(parsed.clientKeyPem, key);
      assert.equal(parsed.certificateAuthorityPem, ca);
    });
  }
});
