// Starts @20minutes/s3rver (an S3 emulator that verifies SigV4 signatures) on 127.0.0.1.
// The package ships no CLI, so this is its command line:
//   [S3RVER_EXTRA_KEY=ID:SECRET] node run.js PORT DIR BUCKET[,BUCKET...]
// Prints "ready" on stdout once it listens; stops on SIGTERM/SIGINT.
'use strict';
const S3rver = require('@20minutes/s3rver');

const [port, dir, buckets] = process.argv.slice(2);
if (!port || !dir || !buckets) {
  console.error('usage: node run.js PORT DIR BUCKET[,BUCKET...]');
  process.exit(2);
}
// S3RVER_EXTRA_KEY=ID:SECRET adds a key pair to the default S3RVER:S3RVER (the secrets scan
// signs with distinctive credentials).
if (process.env.S3RVER_EXTRA_KEY) {
  const pair = process.env.S3RVER_EXTRA_KEY;
  const colon = pair.indexOf(':');
  require('@20minutes/s3rver/lib/models/account').DUMMY_ACCOUNT.createKeyPair(
    pair.slice(0, colon), pair.slice(colon + 1));
}
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory: dir,
  silent: true,
  vhostBuckets: false,
  configureBuckets: buckets.split(',').map((name) => ({ name })),
});
server.run().then(
  () => console.log('ready'),
  (err) => {
    console.error('s3rver failed to start:', err.message);
    process.exit(1);
  },
);
const stop = () => server.close().then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
