"""Events and messages benchmark (docs/performance.md, "Events and messages").

One real hotswapd on the embedded default store (SQLite), rate limits disabled. Two parts, each
against a raw baseline measured in the same run:

1. Messages end to end. N messages are published (`POST /api/v1/messages/publish`, each with a
   client-chosen messageId) by C client threads on keep-alive connections -> published msgs/s.
   Then C consumers of one group drain the topic (`POST /api/v1/messages/topics/{t}/consume`
   with max 100) and acknowledge every message (`POST /api/v1/messages/{id}/acknowledge` with
   the group) -> consumed msgs/s (consume + ack) and end-to-end msgs/s (N over both phases).
   Baseline: N `GET /health` (and N authenticated `GET /api/v1/tenants/{id}`) with the same
   threads and connections -> requests/s; ratios publish/baseline and consume/baseline.
   Correctness: every published id is received exactly once, payloads intact, the topic is
   empty for the group afterwards.

2. Event fan-out. S WebSocket subscribers (`/api/v1/events`, `{"subscribe":"all"}`), read by one
   thread with epoll over the sockets (each receive is timestamped when it leaves the socket).
   E tenant updates (`PUT /api/v1/tenants/{id}` with a unique name; TenantChanged events) are
   sent one after the other, each once the previous event reached every subscriber (closed loop:
   the figure is latency, not queueing). Latency of an (event, subscriber) pair = receive time -
   the time just before the PUT was sent. Baseline: the same with one subscriber (S=1).
   Correctness: every subscriber receives every event exactly once.

Usage: python3 bench/events_bench.py [-n 5000] [-c 4] [-s 100] [-e 200]
Environment: HOTSWAPD (the binary). Exit status 1 on a correctness failure, 2 when an endpoint
answers an unexpected status (printed with its body).
"""

import argparse
import json
import os
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "process"))
import harness  # noqa: E402
from wsclient import WebSocket  # noqa: E402

EVENTS = "/api/v1/events"
MESSAGES = "/api/v1/messages"
TENANTS = "/api/v1/tenants"
CONTACT = "ops@bench.example"


class EndpointError(Exception):
    """An endpoint answered something else than the contract's success status."""


def expect(resp, what, *statuses):
    if resp.status not in statuses:
        raise EndpointError(f"{what}: expected {'/'.join(map(str, statuses))}, got "
                            f"{resp.status}: {resp.raw[:600].decode('utf-8', 'replace')}")
    return resp


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def run_threads(count, target):
    """Runs target(i) on `count` threads; returns (wall seconds, results). Re-raises errors."""
    results = [None] * count
    errors = []
    start = threading.Barrier(count + 1)

    def body(i):
        try:
            start.wait()
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, results


# --------------------------------------------------------------------------------------------
# 1. Messages


def split(n, c):
    """n items over c workers: the index ranges."""
    per, extra = divmod(n, c)
    out, lo = [], 0
    for i in range(c):
        hi = lo + per + (1 if i < extra else 0)
        out.append(range(lo, hi))
        lo = hi
    return out


def request_phase(node, c, ranges, make):
    """Each of c threads sends make(i) requests for its range on its keep-alive connection;
    returns (wall seconds, per-request latencies)."""
    def worker(w):
        lat = []
        for i in ranges[w]:
            method, path, body, tok, what, ok = make(i)
            t = time.perf_counter()
            resp = node.request(method, path, body=body, token=tok)
            lat.append(time.perf_counter() - t)
            expect(resp, what, *ok)
        return lat
    wall, lats = run_threads(c, worker)
    node.close_connections()
    return wall, [x for lat in lats for x in lat]


def messages_part(node, token, tid, n, c):
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    group = "bench-group"
    ids = [f"m-{uuid.uuid4().hex}" for _ in range(n)]
    ranges = split(n, c)
    out = {}

    out["health"] = request_phase(
        node, c, ranges, lambda i: ("GET", "/health", None, None, "GET /health", (200,)))
    out["authget"] = request_phase(
        node, c, ranges, lambda i: ("GET", f"{TENANTS}/{tid}", None, token,
                                    "GET /api/v1/tenants/{id}", (200,)))

    def publish(i):
        body = {"messageId": ids[i], "topicName": topic, "schemaVersion": "1.0",
                "priority": 5, "payload": {"seq": i, "text": "bench message"}}
        return "POST", f"{MESSAGES}/publish", body, token, "POST /api/v1/messages/publish", (201,)
    out["publish"] = request_phase(node, c, ranges, publish)

    # Consume + acknowledge with one group.
    received = {}  # id -> count
    bad_payload = []
    lock = threading.Lock()

    def consumer(w):
        lat_consume, lat_ack = [], []
        empty = 0
        while True:
            t = time.perf_counter()
            resp = node.request("POST", f"{MESSAGES}/topics/{topic}/consume",
                                body={"group": group, "max": 100, "waitMs": 0}, token=token)
            lat_consume.append(time.perf_counter() - t)
            expect(resp, "POST /api/v1/messages/topics/{topic}/consume", 200)
            batch = resp.body
            if not batch:
                # Everything is leased or acknowledged (all was published before): done. One
                # more try in case another consumer's batch was still being decided.
                empty += 1
                if empty >= 2:
                    break
                time.sleep(0.01)
                continue
            empty = 0
            for m in batch:
                mid = m.get("messageId")
                seq = (m.get("payload") or {}).get("seq") if isinstance(m.get("payload"),
                                                                       dict) else None
                with lock:
                    received[mid] = received.get(mid, 0) + 1
                    if seq is None or not (0 <= seq < n) or ids[seq] != mid:
                        bad_payload.append(m)
                t = time.perf_counter()
                ack = node.request("POST", f"{MESSAGES}/{mid}/acknowledge", body={"group": group},
                                   token=token)
                lat_ack.append(time.perf_counter() - t)
                expect(ack, "POST /api/v1/messages/{id}/acknowledge", 200)
        return lat_consume, lat_ack
    wall, lats = run_threads(c, consumer)
    node.close_connections()
    out["consume"] = (wall, [x for lc, _ in lats for x in lc], [x for _, la in lats for x in la])

    # Nothing left (and nothing redelivered) for the group.
    left = expect(node.request("POST", f"{MESSAGES}/topics/{topic}/consume",
                               body={"group": group, "max": 100, "waitMs": 0}, token=token),
                  "final consume", 200).body
    published = set(ids)
    dup = {k: v for k, v in received.items() if v != 1}
    out["check"] = {
        "published": n,
        "received_distinct": len(received),
        "missing": len(published - set(received)),
        "unknown": len(set(received) - published),
        "duplicates": len(dup),
        "bad_payload": len(bad_payload),
        "left_after": len(left),
    }
    out["check"]["ok"] = (out["check"]["missing"] == 0 and out["check"]["unknown"] == 0
                          and not dup and not bad_payload and not left)
    return out


# --------------------------------------------------------------------------------------------
# 2. Event fan-out


class Subscribers:
    """S WebSocket connections subscribed to "all", read by one thread with epoll."""

    def __init__(self, port, token, count, names):
        self.names = names  # event name -> index
        self.count = count
        self.conns = []
        for _ in range(count):
            ws = WebSocket(port, EVENTS, token=token)
            ws.send_json({"subscribe": "all"})
            reply = ws.recv_json()
            if reply.get("type") != "Subscribed":
                raise EndpointError(f"subscribe: expected a Subscribed reply, got {reply}")
            self.conns.append(ws)
        # got[i] = list of (subscriber, receive time); per-event completion signals.
        self.got = [[] for _ in names]
        self.reached = [0] * len(names)
        self.done = [threading.Event() for _ in names]
        self.per_sub = [dict() for _ in range(count)]  # name -> times received
        self.errors = []
        self.stop_flag = False
        self.sel = selectors.DefaultSelector()
        for k, ws in enumerate(self.conns):
            ws.sock.setblocking(False)
            self.sel.register(ws.sock, selectors.EVENT_READ, k)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        pending = [ws.buf for ws in self.conns]  # bytes left over from the handshake
        try:
            for k in range(self.count):
                if pending[k]:
                    self.frames(k, pending, time.perf_counter())
            while not self.stop_flag:
                # Every ready socket is read (and timestamped) before any frame is parsed, so
                # that parsing for one subscriber does not delay the timestamp of the next.
                batch = []
                for key, _ in self.sel.select(timeout=0.1):
                    k = key.data
                    try:
                        chunk = self.conns[k].sock.recv(1 << 20)
                    except (BlockingIOError, InterruptedError):
                        continue
                    batch.append((k, chunk, time.perf_counter()))
                for k, chunk, now in batch:
                    if not chunk:
                        self.errors.append(f"subscriber {k}: connection closed by the server")
                        self.sel.unregister(self.conns[k].sock)
                        continue
                    pending[k] += chunk
                    self.frames(k, pending, now)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.errors.append(f"reader: {exc!r}")

    def frames(self, k, pending, now):
        buf = pending[k]
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.event(k, payload, now)
            elif opcode == 0x9:
                self.conns[k].sock.setblocking(True)
                self.conns[k].send_frame(0xA, payload)
                self.conns[k].sock.setblocking(False)
            elif opcode == 0x8:
                self.errors.append(f"subscriber {k}: close frame {payload[:2].hex()} "
                                   f"{payload[2:].decode(errors='replace')}")
        pending[k] = buf

    def event(self, k, payload, now):
        ev = json.loads(payload)
        if ev.get("type") != "TenantChanged":
            return
        name = (ev.get("details") or {}).get("name")
        i = self.names.get(name)
        if i is None:
            return
        seen = self.per_sub[k]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            return  # counted as a duplicate by the check
        self.got[i].append((k, now))
        self.reached[i] += 1
        if self.reached[i] == self.count:
            self.done[i].set()

    def close(self):
        self.stop_flag = True
        self.thread.join(timeout=5)
        for ws in self.conns:
            try:
                ws.sock.setblocking(True)
                ws.sock.settimeout(1)
            except OSError:
                pass
            ws.close()


def fanout(node, token, tid, subscribers, events, deadline_s=10.0):
    run = uuid.uuid4().hex[:6]
    names = [f"fan-{run}-{subscribers}-{i}" for i in range(events)]
    subs = Subscribers(node.port, token, subscribers, {nm: i for i, nm in enumerate(names)})
    sent, put_lat, timed_out = [], [], []
    try:
        for i, nm in enumerate(names):
            t = time.perf_counter()
            resp = node.request("PUT", f"{TENANTS}/{tid}", body={"name": nm,
                                                                 "contactEmail": CONTACT},
                                token=token)
            put_lat.append(time.perf_counter() - t)
            expect(resp, "PUT /api/v1/tenants/{id}", 200)
            sent.append(t)
            if not subs.done[i].wait(deadline_s):
                timed_out.append(i)
        time.sleep(0.2)  # late duplicates, if any, arrive now
    finally:
        subs.close()
    lat = [now - sent[i] for i in range(events) for _, now in subs.got[i]]
    # Per event: to its first and to its last subscriber (the spread is the fan-out's cost).
    first = [min(now for _, now in subs.got[i]) - sent[i] for i in range(events) if subs.got[i]]
    last = [max(now for _, now in subs.got[i]) - sent[i] for i in range(events) if subs.got[i]]
    worst = max(range(events), key=lambda i: last[i] if i < len(last) else 0) if last else None
    complete = all(subs.reached[i] == subscribers for i in range(events))
    dups = sum(v - 1 for seen in subs.per_sub for v in seen.values() if v > 1)
    return {"lat": lat, "first": first, "last": last, "worst": worst, "put": put_lat, "complete": complete, "timed_out": timed_out,
            "dups": dups, "errors": subs.errors,
            "pairs": sum(subs.reached), "expected_pairs": subscribers * events}


# --------------------------------------------------------------------------------------------


def ms(x):
    return f"{1e3 * x:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=5000, help="messages (N)")
    ap.add_argument("-c", "--clients", type=int, default=4,
                    help="client threads / keep-alive connections (C)")
    ap.add_argument("-s", "--subscribers", type=int, default=100,
                    help="WebSocket subscribers (S)")
    ap.add_argument("-e", "--events", type=int, default=200, help="events (E)")
    args = ap.parse_args()
    if args.messages < 1 or args.clients < 1 or args.subscribers < 1 or args.events < 1:
        sys.exit("N, C, S and E must be >= 1")

    node = harness.Node(config={"rate_limits": {"enabled": False},
                                "logging": {"level": "warn"}}, name="eventsbench")
    failures = []
    status = 0
    try:
        node.start()
        token = node.token("admin")
        resp = expect(node.post(TENANTS, {"name": "Bench", "subdomain": harness.unique("evb-"),
                                          "tier": "Starter", "contactEmail": CONTACT},
                                token=token), "POST /api/v1/tenants", 201)
        tid = resp.body["tenantId"]
        print(f"hotswapd {node.binary} (SQLite, rate limits off); N={args.messages} "
              f"C={args.clients} S={args.subscribers} E={args.events}", flush=True)

        # -- 1 ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        m = messages_part(node, token, tid, args.messages, args.clients)
        n = args.messages
        hw, hl = m["health"]
        aw, al = m["authget"]
        pw, pl = m["publish"]
        cw, cl, kl = m["consume"]
        base = n / hw
        print(f"\n== messages: {n} messages, {args.clients} client threads (keep-alive), one "
              f"group, consume batches of 100 ({time.perf_counter() - t0:.1f} s)")
        rows = [
            ("baseline GET /health", n / hw, f"p50 {ms(statistics.median(hl))} ms, "
             f"p99 {ms(percentile(hl, 99))} ms"),
            ("GET /api/v1/tenants/{id} (auth)", n / aw, f"p50 {ms(statistics.median(al))} ms, "
             f"p99 {ms(percentile(al, 99))} ms"),
            ("publish", n / pw, f"p50 {ms(statistics.median(pl))} ms, "
             f"p99 {ms(percentile(pl, 99))} ms"),
            ("consume + ack", n / cw, f"consume p50 {ms(statistics.median(cl))} ms "
             f"({len(cl)} calls), ack p50 {ms(statistics.median(kl))} ms, "
             f"p99 {ms(percentile(kl, 99))} ms"),
            ("end to end (publish + consume + ack)", n / (pw + cw), ""),
        ]
        print(f"{'what':<38} {'per s':>9} {'vs /health':>10}  latency")
        for label, rate, extra in rows:
            print(f"{label:<38} {rate:>9.0f} {rate / base:>9.3f}x  {extra}")
        chk = m["check"]
        print(f"exactly once: published {chk['published']}, received {chk['received_distinct']} "
              f"distinct, missing {chk['missing']}, duplicates {chk['duplicates']}, unknown "
              f"{chk['unknown']}, bad payloads {chk['bad_payload']}, left after "
              f"{chk['left_after']} -> {'OK' if chk['ok'] else 'FAILED'}", flush=True)
        if not chk["ok"]:
            failures.append("messages were not received exactly once")

        # -- 2 ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        one = fanout(node, token, tid, 1, args.events)
        many = fanout(node, token, tid, args.subscribers, args.events)
        print(f"\n== event fan-out: {args.events} TenantChanged events (PUT tenant, closed "
              f"loop), latency = receive - just before the PUT ({time.perf_counter() - t0:.1f} s)")
        print(f"{'subscribers':<12} {'pairs':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
              f"{'1st p50':>7} {'last p50':>8} {'PUT p50':>7}  every event to every subscriber")
        for s, r in ((1, one), (args.subscribers, many)):
            ok = r["complete"] and not r["dups"] and not r["errors"]
            if not r["lat"]:
                print(f"{s:<12} {r['pairs']:>6} no event received")
            else:
                print(f"{s:<12} {r['pairs']:>6} {ms(statistics.median(r['lat'])):>7} "
                      f"{ms(percentile(r['lat'], 99)):>7} {ms(max(r['lat'])):>7} "
                      f"{ms(statistics.median(r['first'])):>7} "
                      f"{ms(statistics.median(r['last'])):>8} {ms(statistics.median(r['put'])):>7}"
                      f"  {str(ok).lower()} ({r['pairs']}/{r['expected_pairs']}, duplicates "
                      f"{r['dups']}; slowest event #{r['worst']})")
            if r["timed_out"]:
                print(f"  events not complete within 10 s: {len(r['timed_out'])}")
            for e in r["errors"][:5]:
                print(f"  error: {e}")
            if not ok:
                failures.append(f"S={s}: not every subscriber got every event exactly once")
        if one["lat"] and many["lat"]:
            print(f"ratio S={args.subscribers} / S=1: p50 "
                  f"{statistics.median(many['lat']) / statistics.median(one['lat']):.2f}x, "
                  f"p99 {percentile(many['lat'], 99) / percentile(one['lat'], 99):.2f}x, max "
                  f"{max(many['lat']) / max(one['lat']):.2f}x")
        if failures:
            print("\nCORRECTNESS FAILURES: " + "; ".join(failures), file=sys.stderr)
            status = 1
    except EndpointError as exc:
        print(f"\nENDPOINT FAILURE: {exc}", file=sys.stderr)
        status = 2
    except BaseException:
        status = 3
        raise
    finally:
        node.cleanup()
        if status:
            print(f"node dir kept: {node.dir}", file=sys.stderr)
        else:
            node.remove_dir()
    sys.exit(status)


if __name__ == "__main__":
    main()
