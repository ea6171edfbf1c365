/**
 * The socket.io 4.8 comparison server (websocket transport only), in Bun:
 * `bun bench/lib/sio-server.ts`, prints {"port":N}.
 *   echo(data, ack)        ack(data)                                   the ping scenario
 *   join(room, ack)        socket.join(room); ack({})
 *   send({room,body}, ack) io.to(room).emit("message", event); ack({seq, at})   fan-out
 */
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });
const seqs = new Map<string, number>();

io.on("connection", (socket) => {
  socket.on("echo", (data: unknown, ack: (d: unknown) => void) => ack(data));
  socket.on("join", (room: string, ack: (r: unknown) => void) => {
    void socket.join(room);
    ack({ room });
  });
  socket.on("send", (msg: { room: string; body: string }, ack: (r: unknown) => void) => {
    const seq = (seqs.get(msg.room) ?? 0) + 1;
    seqs.set(msg.room, seq);
    const at = new Date().toISOString();
    io.to(msg.room).emit("message", { room: msg.room, seq, user: "bench", body: msg.body, at });
    ack({ seq, at });
  });
});

http.listen(0, "127.0.0.1", () => {
  const addr = http.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  process.stdout.write(JSON.stringify({ port }) + "\n");
});
process.on("SIGTERM", () => {
  void io.close();
  process.exit(0);
});
