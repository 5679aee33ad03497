// The benchmark peer: what notifier's web process does on the hot path, in Node with `ws`.
//
// Subscribes, as notifier's web process does, to each user's own Redis channel
// (notifier:u:{g<crc32 % 256>}:<user id>) while it holds a socket of that user (batched
// SUBSCRIBEs, the greeting once the channel is confirmed; UNSUBSCRIBE a second after the
// user's last socket left), and to notifier:events for announcements. It keeps user id ->
// set of sockets and sends each event's bytes to the sockets it is for. Sockets connect to
// /ws?token=<HS256 JWT>&format=html|json exactly as they do to notifier; the token's
// signature and expiry are checked with node's crypto and `sub` is the user id.
// Compression and pings are off. The bench's events carry the payload notifier renders
// for them (`bench.html` / `bench.json`), so both servers send the same bytes.
//
//   PORT=8899 REDIS_URL=redis://127.0.0.1:6390/0 JWT_SECRET=... node server.js
'use strict';

const crypto = require('crypto');
const http = require('http');
const Redis = require('ioredis');
const { WebSocketServer } = require('ws');

const BROADCAST = 'notifier:events';
const USER_GROUPS = 256;
const LINGER_MS = 1000; // a user's channel outlives their last socket by this long
const BATCH = 1000; // channels per SUBSCRIBE / UNSUBSCRIBE

const CRC_TABLE = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

function crc32(text) {
  let c = -1;
  for (const b of Buffer.from(text)) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// notifier.realtime.bus.user_channel
function userChannel(userId) {
  return `notifier:u:{g${crc32(userId) % USER_GROUPS}}:${userId}`;
}
const port = Number(process.env.PORT || 8899);
const secret = process.env.JWT_SECRET || '';
const byUser = new Map(); // user id -> Set of sockets
const all = new Set();

function verify(token) {
  const parts = (token || '').split('.');
  if (parts.length !== 3) return null;
  const mac = crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest();
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== mac.length || !crypto.timingSafeEqual(sig, mac)) return null;
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  if (typeof claims.sub !== 'string' || !(claims.exp > Date.now() / 1000)) return null;
  return claims;
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://peer');
  const claims = url.pathname === '/ws' ? verify(url.searchParams.get('token')) : null;
  if (claims === null) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.userId = claims.sub;
    ws.format = url.searchParams.get('format') === 'json' ? 'json' : 'html';
    let conns = byUser.get(ws.userId);
    if (conns === undefined) byUser.set(ws.userId, (conns = new Set()));
    conns.add(ws);
    all.add(ws);
    ws.on('close', () => {
      all.delete(ws);
      conns.delete(ws);
      if (conns.size === 0) {
        byUser.delete(ws.userId);
        release(ws.userId);
      }
    });
    ws.on('error', () => ws.terminate());
    hold(ws.userId).then(() => {
      if (ws.readyState === 1) {
        ws.send(JSON.stringify({ type: 'connection-established', data: { user_id: ws.userId } }));
      }
    });
  });
});

// Per-user subscriptions: channel -> {ready: Promise, timer} while held or lingering.
const held = new Map();
let toSubscribe = [];
let toUnsubscribe = [];
let flushing = false;

function hold(userId) {
  const channel = userChannel(userId);
  let entry = held.get(channel);
  if (entry !== undefined) {
    if (entry.timer !== null) clearTimeout(entry.timer);
    entry.timer = null;
    return entry.ready;
  }
  let resolve;
  entry = { ready: new Promise((r) => (resolve = r)), resolve, timer: null };
  held.set(channel, entry);
  toSubscribe.push(channel);
  scheduleFlush();
  return entry.ready;
}

function release(userId) {
  const channel = userChannel(userId);
  const entry = held.get(channel);
  if (entry === undefined) return;
  entry.timer = setTimeout(() => {
    held.delete(channel);
    toUnsubscribe.push(channel);
    scheduleFlush();
  }, LINGER_MS);
}

function scheduleFlush() {
  if (flushing) return;
  flushing = true;
  setImmediate(() => {
    flushing = false;
    const subs = toSubscribe;
    const unsubs = toUnsubscribe;
    toSubscribe = [];
    toUnsubscribe = [];
    for (let i = 0; i < unsubs.length; i += BATCH) sub.unsubscribe(...unsubs.slice(i, i + BATCH));
    for (let i = 0; i < subs.length; i += BATCH) {
      const batch = subs.slice(i, i + BATCH);
      sub.subscribe(...batch).then(() => {
        for (const channel of batch) {
          const entry = held.get(channel);
          if (entry !== undefined) entry.resolve();
        }
      });
    }
  });
}

function sendTo(sockets, bench) {
  const payloads = { html: Buffer.from(bench.html), json: Buffer.from(bench.json) }; // encoded once
  for (const ws of sockets) {
    if (ws.readyState === 1) ws.send(payloads[ws.format], { binary: false });
  }
}

const sub = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379/0');
sub.subscribe(BROADCAST, (err) => {
  if (err) throw err;
  server.listen(port, '127.0.0.1', () => console.log(`node-ws peer listening on port ${port}`));
});
sub.on('message', (_channel, raw) => {
  const event = JSON.parse(raw);
  if (event.bench === undefined) return;
  if (event.kind === 'notification') {
    const conns = byUser.get(event.user_id);
    if (conns !== undefined) sendTo(conns, event.bench);
  } else if (event.kind === 'announcement') {
    sendTo(all, event.bench);
  }
});

process.on('SIGTERM', () => process.exit(0));
