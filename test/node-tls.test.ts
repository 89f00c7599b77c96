// TLS and mutual TLS on the node, with certificates made for the test.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { BulkLane, hostPort } from '../src/mesh/bulk-client.js';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hashChunk } from '../src/content/manifest.js';
import { NodeProc, tempDir } from './helpers/node-proc.js';

function makeCerts(dir: string): void {
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=ghostfs test CA');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who === 'server' ? 'localhost' : 'ghostfs client'}`);
    const ext = join(dir, `${who}.ext`);
    execFileSync('sh', ['-c', `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ${ext}`]);
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2', '-extfile', ext);
  }
}

t.test('mutual TLS: only clients with a certificate from the CA get in', async (t) => {
  const dir = await tempDir(t);
  makeCerts(dir);
  await mkdir(join(dir, 'ws'));
  await writeFile(join(dir, 'ws', 'f'), 'secret');
  const c = (n: string): string => join(dir, n);
  const node = await NodeProc.start(['--root', c('ws'), '--state-dir', c('st'), '--tls-cert', c('server.crt'), '--tls-key', c('server.key'), '--tls-ca', c('ca.crt')]);
  t.teardown(() => node.stop('SIGKILL'));
  const good = node.connect('default', { tls: { ca: c('ca.crt'), cert: c('client.crt'), key: c('client.key') }, deadlineMs: 5000 });
  const noCert = node.connect('default', { tls: { ca: c('ca.crt') }, deadlineMs: 3000 });
  const plain = node.connect('default', { deadlineMs: 3000 });
  t.teardown(() => [good, noCert, plain].forEach((x) => x.close()));
  t.equal((await good.stat('f')).attr!.size, 6, 'client with a CA-signed certificate is served');
  await t.rejects(noCert.stat('f'), 'client without a certificate is refused');
  await t.rejects(plain.stat('f'), 'plaintext client is refused');

  // The bulk lane shares the port and its TLS, client certificate included.
  const hashes = (await good.getManifest('f')).chunks.map((x) => x.hash);
  const at = hostPort(node.endpoint)!;
  const lane = (tls: { ca?: Buffer; cert?: Buffer; key?: Buffer }): BulkLane => new BulkLane({ ...at, authorization: '', workspace: 'default', tls });
  const withCert = lane({ ca: await readFile(c('ca.crt')), cert: await readFile(c('client.crt')), key: await readFile(c('client.key')) });
  const withoutCert = lane({ ca: await readFile(c('ca.crt')) });
  t.teardown(() => [withCert, withoutCert].forEach((x) => x.close()));
  const got: Buffer[] = [];
  for await (const x of withCert.fetch(hashes, 'f', 5000)) got.push(x.data);
  t.equal(Buffer.concat(got).toString(), 'secret', 'the lane serves a client with a CA-signed certificate over TLS');
  const refused = await (async () => {
    for await (const _ of withoutCert.fetch(hashes, 'f', 3000)) void _;
  })().then(
    () => undefined,
    (err: unknown) => err,
  );
  t.ok(refused instanceof Error, `and refuses one without (${String(refused)})`);

  // Uploads on the lane over TLS: several chunks of 1 MiB, read on the node across TLS records.
  const parts = Array.from({ length: 5 }, () => randomBytes(1 << 20));
  const up = await withCert.upload(
    (async function* () {
      for (const data of parts) yield { hash: hashChunk(data), data };
    })(),
    10_000,
  );
  t.same(up, { stored: parts.length, bytes: parts.length << 20 }, 'the lane takes uploads over TLS');
  t.same(await good.hasChunks(parts.map((p) => hashChunk(p))), [], 'and the node holds them');
});

t.test('TLS flags are validated together', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'ws'));
  const r = await NodeProc.start(['--root', join(dir, 'ws'), '--state-dir', join(dir, 'st'), '--tls-cert', join(dir, 'missing.crt')]).then(
    () => 'started',
    (e: Error) => e.message,
  );
  t.match(r, /--tls-cert needs --tls-key/, 'one clear sentence');
});
