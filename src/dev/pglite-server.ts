/**
 * @module dev/pglite-server
 * PGlite (PostgreSQL compiled to WebAssembly, one backend in this process) behind a TCP port that
 * speaks PostgreSQL's wire protocol, so postgres.js, `psql` and the migrations reach it unchanged.
 *
 * PGlite is a single backend: every connection shares its one session. This server keeps them
 * apart the way separate backends would look from outside:
 * - a connection's messages reach PGlite in whole exchanges (up to a Sync, Query or Flush), never
 *   interleaved with another connection's (an unnamed portal of one would otherwise be bound or
 *   executed by another);
 * - while a connection has a transaction open, or has flushed half an exchange (postgres.js
 *   describes a statement first, then binds it), only that connection is served.
 *
 * NOTE: not @electric-sql/pglite-socket 0.2.17: it queues single protocol messages, so pipelined
 * queries from two connections interleave (postgres.js then fails with `portal "" does not exist`).
 */
import { createServer, type Server, type Socket } from "node:net";
import type { PGlite } from "@electric-sql/pglite";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
/** Message types after which the client waits for an answer: Sync, Query, Flush. */
const EXCHANGE_END = new Set(["S".charCodeAt(0), "Q".charCodeAt(0), "H".charCodeAt(0)]);
const FLUSH = "H".charCodeAt(0);
const TERMINATE = "X".charCodeAt(0);

export interface PgliteServer {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  url: string;
  port: number;
  stop(): Promise<void>;
}

interface Job {
  conn: Conn;
  /** Protocol messages, or none: the connection closed (roll back what it left open). */
  bytes?: Uint8Array;
  /** Ends with a Flush: the client sends the rest of the exchange after reading the answer. */
  open: boolean;
  done: () => void;
}

interface Conn {
  socket: Socket;
  started: boolean;
  pending: Buffer;
  closed: boolean;
}

export async function startPgliteServer(db: PGlite, { host = "127.0.0.1", port = 0 } = {}): Promise<PgliteServer> {
  const jobs: Job[] = [];
  /** The connection whose transaction is open: only its exchanges run until it ends. */
  let owner: Conn | undefined;
  let pumping = false;

  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      for (;;) {
        const i = jobs.findIndex((j) => !owner || j.conn === owner);
        if (i < 0) break;
        const [job] = jobs.splice(i, 1);
        const { conn, bytes, open, done } = job!;
        try {
          if (bytes) {
            await db.runExclusive(() =>
              db.execProtocolRawStream(bytes, { onRawData: (chunk) => void (!conn.closed && conn.socket.write(chunk)) }),
            );
          } else if (owner === conn) {
            // It went away inside a transaction: roll it back, as a backend would.
            await db.exec("ROLLBACK");
          }
        } catch (err) {
          conn.socket.destroy(err as Error);
        }
        owner = open || db.isInTransaction() ? conn : undefined;
        done();
      }
    } finally {
      pumping = false;
    }
  };

  const exchange = (conn: Conn, bytes: Uint8Array | undefined, open = false) =>
    new Promise<void>((done) => {
      if (bytes && conn.closed) return done(); // nothing more after its release
      jobs.push({ conn, bytes, open, done });
      void pump();
    });

  /** Cuts whole exchanges off the connection's buffer and runs them in order. */
  const serial = new WeakMap<Conn, Promise<void>>();
  const feed = (conn: Conn) => {
    const prev = serial.get(conn) ?? Promise.resolve();
    const next = prev.then(async () => {
      for (;;) {
        const buf = conn.pending;
        if (!conn.started) {
          if (buf.length < 8) return;
          const len = buf.readInt32BE(0);
          if (buf.length < len) return;
          const code = buf.readInt32BE(4);
          conn.pending = buf.subarray(len);
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
            conn.socket.write("N");
          } else if (code === CANCEL_REQUEST) {
            conn.socket.end();
            return;
          } else {
            conn.started = true;
            await exchange(conn, buf.subarray(0, len));
          }
          continue;
        }
        // Find the end of the last complete exchange in the buffer.
        let at = 0;
        let end = 0;
        let open = false;
        let terminate = false;
        while (at + 5 <= buf.length) {
          const len = 1 + buf.readInt32BE(at + 1);
          if (at + len > buf.length) break;
          const type = buf[at]!;
          if (type === TERMINATE) {
            terminate = true;
            break;
          }
          at += len;
          if (EXCHANGE_END.has(type)) {
            end = at;
            open = type === FLUSH;
          }
        }
        if (end > 0) {
          conn.pending = buf.subarray(end);
          await exchange(conn, Uint8Array.from(buf.subarray(0, end)), open);
        }
        if (terminate) {
          conn.socket.end();
          return;
        }
        if (end === 0) return;
      }
    });
    serial.set(conn, next.catch(() => {}));
  };

  const release = (conn: Conn) => {
    conn.closed = true;
    for (let i = jobs.length - 1; i >= 0; i--) if (jobs[i]!.conn === conn) jobs.splice(i, 1)[0]!.done();
    void exchange(conn, undefined);
  };

  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    const conn: Conn = { socket, started: false, pending: Buffer.alloc(0), closed: false };
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("data", (data: Buffer) => {
      conn.pending = conn.pending.length ? Buffer.concat([conn.pending, data]) : data;
      feed(conn);
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      sockets.delete(socket);
      release(conn);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === "object" && address ? address.port : port;
  return {
    url: `postgres://postgres@${host}:${bound}/postgres`,
    port: bound,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
