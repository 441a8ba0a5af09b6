'use strict';
// Faye's own Bayeux server (NodeAdapter, in-memory engine): a baseline for `make bench`.
//
//   node faye_server.js PORT
//
// Serves Bayeux at http://127.0.0.1:PORT/bayeux (HTTP and WebSocket) until SIGTERM.

const http = require('http');
const faye = require('faye');

const port = Number(process.argv[2]);
const server = http.createServer();
const bayeux = new faye.NodeAdapter({ mount: '/bayeux', timeout: 45 });
bayeux.attach(server);
server.listen(port, '127.0.0.1', () => console.log('faye listening on ' + port));
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
