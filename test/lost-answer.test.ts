// A unary call whose status arrives but whose answer does not (the fault
// suite's lost DATA frames do this): grpc-js reports UNIMPLEMENTED "No
// message received". The node did run the call, so the mount must take it
// for a lost answer (retried, then recognized), never for a refusal or for
// a node that lacks the method. Real gRPC over loopback: an HTTP/2 server
// that answers with a status and no message, and a grpc-js server that
// really lacks the method.
import t from 'tap';
import * as http2 from 'node:http2';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { wire } from '../src/wire/proto.js';
import { answerLost, errnoOf, isUnimplemented } from '../src/wire/errors.js';

type StatClient = grpc.Client & { stat(req: unknown, cb: (err: grpc.ServiceError | null) => void): void };

function statOn(port: number): Promise<grpc.ServiceError> {
  const client = new (wire().ghostfs.v1.Node as unknown as new (addr: string, creds: grpc.ChannelCredentials) => StatClient)(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.stat({ workspace: 'default', path: 'x' }, (err) => {
      client.close();
      if (err) resolve(err);
      else reject(new Error('the call succeeded'));
    }),
  );
}

t.test('a status without its answer is a lost answer, not a missing method', async (t) => {
  // The node's answer vanished on the way: headers and an OK status, no message.
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const lost = await statOn((server.address() as { port: number }).port);
  t.equal(lost.code, grpc.status.UNIMPLEMENTED, `grpc-js reports it as UNIMPLEMENTED (${lost.message})`);
  t.ok(answerLost(lost), 'taken for a lost answer');
  t.notOk(isUnimplemented(lost), 'not for a node without the method');
  t.equal(errnoOf(lost), 'ETIMEDOUT', 'the errno of a call whose answer did not come');

  // A node that really lacks the method.
  const bare = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) => bare.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => bare.forceShutdown());
  const missing = await statOn(port);
  t.equal(missing.code, grpc.status.UNIMPLEMENTED);
  t.ok(isUnimplemented(missing), `a missing method is one (${missing.message})`);
  t.notOk(answerLost(missing), 'and no lost answer');
});
