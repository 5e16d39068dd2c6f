// Socket.IO baseline for teamhub-loadtest: what a common Node.js stack does with the
// same traffic. One room per team; "join" joins it (acknowledged), "publish" relays the
// payload to everyone else in the room through the Redis adapter (so every broadcast
// also goes through Redis pub/sub, as it would with several nodes). No authentication,
// offsets, presence or history, like the relay baseline.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 PORT=3000 node server.js
// The generator: --server-kind socketio --url ws://127.0.0.1:3000

"use strict";

const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const http = createServer();
  const io = new Server(http, {
    // WebSocket only, as the generator speaks it; no long-polling upgrade dance.
    transports: ["websocket"],
    adapter: createAdapter(pub, sub),
    serveClient: false,
  });

  io.on("connection", (socket) => {
    socket.on("join", (team, ack) => {
      socket.join(String(team));
      if (typeof ack === "function") ack({ ok: true });
    });
    socket.on("publish", (team, type, data) => {
      // Everyone in the room but the sender, on every node.
      socket.to(String(team)).emit("message", team, data);
    });
  });

  http.listen(port, host, () => {
    console.error(`socket.io baseline on ws://${host}:${port} (redis ${redisUrl}), pid ${process.pid}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
