"""Two replicas of the real binary on two JuiceFS mounts with default caches, 4 clients appending
40 records each; then the file is read straight from a strict mount (after the caches expire) and
checked: every acknowledged record once and whole."""
import http.client, os, re, subprocess, sys, threading, time, random
binary, m_a, m_b, strict = sys.argv[1:5]
name = f"svc-{os.getpid()}-{random.randint(0, 1 << 30)}"
os.mkdir(os.path.join(m_a, name))
time.sleep(1.2)
procs, ports = [], []
for m in (m_a, m_b):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--storage", os.path.join(m, name)],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        g = re.search(r"listening on 127.0.0.1:(\d+)", line)
        if g:
            ports.append(int(g.group(1))); break
    procs.append(p)
acked, lock = [], threading.Lock()
def client(c):
    conn = http.client.HTTPConnection("127.0.0.1", ports[c % 2])
    for seq in range(40):
        body = f"r{c % 2}c{c}:{seq:06d}:".encode().ljust(60 + seq % 40, b"z") + b"\n"
        conn.request("PUT", "/file/shared.log", body=body)
        r = conn.getresponse(); r.read()
        if r.status == 200:
            with lock: acked.append(body)
threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
t0 = time.perf_counter()
[t.start() for t in threads]; [t.join() for t in threads]
print(f"appends/s {160 / (time.perf_counter() - t0):.0f}")
for p in procs: p.kill()
rolled = sum(p.stderr.read().count("rolled back an interrupted append") for p in procs)
print(f"rollbacks logged: {rolled}")
time.sleep(1.5)
data = open(os.path.join(strict, name, "shared.log"), "rb").read()
recs = [l + b"\n" for l in data.split(b"\n")[:-1]]
ok = set(acked)
whole = [r for r in recs if r in ok]
missing = len(ok - set(recs)); dup = len(whole) - len(set(whole)); torn = len(recs) - len(whole)
print(f"acked {len(ok)}, on the volume: {len(recs)} lines, missing {missing}, doubled {dup}, torn/foreign {torn}")
