// The fault proxy the fault suite and the retry tests lean on: its reset of
// every connection must close each one for good, even a socket whose own end
// (FIN) is under way. Real sockets on loopback, in a child process, because
// the failure shows only as a process that never exits.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const proxyModule = fileURLToPath(new URL('../scripts/soak/lib/fault-proxy.js', import.meta.url));

const script = `
import { createServer, connect } from 'node:net';
import { once } from 'node:events';
import { abortSocket } from ${JSON.stringify(proxyModule)};
const server = createServer((s) => s.on('error', () => {}));
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const socket = connect(server.address().port, '127.0.0.1');
socket.on('error', (e) => console.log('error', e.code, e.syscall));
await once(socket, 'connect');
socket.end(); // its shutdown is now under way
abortSocket(socket);
await once(socket, 'close');
server.close();
console.log('done');
`;

t.test('aborting a socket whose end is under way closes it for good', async (t) => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  // A reset refused (EINVAL) left Node's handle marked closing yet open: the process spun at exit for ever.
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  t.equal(out.trim(), 'done', 'no error on the way');
  t.same({ code, signal }, { code: 0, signal: null }, 'and the process exits');
});
