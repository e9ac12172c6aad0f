// A BIND through a SOCKS5 proxy with the Node `socks` package (a client
// this project did not write), driven by test_bind.py.
//
// usage: node bind_client.js PROXY_HOST PROXY_PORT EXPECTED_PEER
//
// Prints one JSON object a line: {"event":"bound",host,port} when the first
// reply arrives, {"event":"established",host,port} with the peer of the
// second; then writes "ping from node\n" to the peer and, when the peer
// closes, prints {"event":"data",data} with what it sent and exits 0.  Any
// error: a message on stderr, exit 1.
'use strict';

const { SocksClient } = require('socks');

const [proxyHost, proxyPort, peer] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const client = new SocksClient({
  proxy: { host: proxyHost, port: Number(proxyPort), type: 5 },
  command: 'bind',
  destination: { host: peer, port: 0 },
  timeout: 20000,
});

client.on('bound', (info) => {
  say({ event: 'bound', host: info.remoteHost.host, port: info.remoteHost.port });
});

client.on('established', (info) => {
  say({ event: 'established', host: info.remoteHost.host, port: info.remoteHost.port });
  const sock = info.socket;
  let got = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => { got += d; });
  sock.on('end', () => {
    say({ event: 'data', data: got });
    sock.end();
  });
  sock.on('close', () => process.exit(0));
  sock.resume();
  sock.write('ping from node\n');
});

client.on('error', (err) => {
  process.stderr.write('bind_client: ' + err.message + '\n');
  process.exit(1);
});

setTimeout(() => {
  process.stderr.write('bind_client: no result within 30 s\n');
  process.exit(1);
}, 30000).unref();

client.connect();
