#!/usr/bin/env python3
"""Interleaved A/B on one machine: the same bench-fake behind several proxies (ollama-proxy binaries,
or `nginx` for nginx as a plain reverse proxy), wrk rounds alternating between them, GET /api/version.
Prints req/s, CPU per request of the proxy (user, system), of bench-fake and of wrk, and the medians.
Rounds alternate so that a machine whose speed drifts (a shared VM) treats every binary alike.

  cargo build --release -p ollama-proxy -p ollama-proxy-bench
  bench/interleaved.py CONNS SECS ROUNDS name=/path/to/ollama-proxy [name=nginx ...]
  e.g. bench/interleaved.py 128 4 6 before=/tmp/ollama-proxy-old after=target/release/ollama-proxy nginx=nginx
"""
import resource, shutil, subprocess, sys, json, os, re, time, signal, tempfile, socket, statistics as st
conns, secs, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bins = [a.split('=',1) for a in sys.argv[4:]]
tck = os.sysconf('SC_CLK_TCK')
procs = []
dirs = []
def cpu1(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')',1)[1].split()
    return int(f[11])*1e6/tck, int(f[12])*1e6/tck
def cpu(pids):
    u=s=0
    for p in pids:
        a,b=cpu1(p); u+=a; s+=b
    return u,s
def children(pid):
    out = subprocess.run(['pgrep','-P',str(pid)],capture_output=True,text=True).stdout.split()
    return [int(x) for x in out]
try:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fake = subprocess.Popen([os.path.join(root, 'target/release/bench-fake')], stdout=subprocess.PIPE, text=True)
    procs.append(fake)
    addr = json.loads(fake.stdout.readline())['addr']
    targets = []
    for name, path in bins:
        if path == 'nginx':
            s=socket.socket(); s.bind(('127.0.0.1',0)); port=s.getsockname()[1]; s.close()
            d = tempfile.mkdtemp(); dirs.append(d); os.makedirs(d+'/logs')
            conf = f"""worker_processes auto;
error_log {d}/logs/error.log warn; pid {d}/nginx.pid; events {{ worker_connections 8192; }}
http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
 upstream ollama {{ server {addr}; keepalive 256; }}
 server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://ollama; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_request_buffering off; proxy_read_timeout 600s; }} }} }}
"""
            open(d+'/nginx.conf','w').write(conf)
            p = subprocess.Popen(['nginx','-p',d,'-c',d+'/nginx.conf','-g','daemon off;'])
            procs.append(p); time.sleep(0.5)
            targets.append((name, p, f'127.0.0.1:{port}', children(p.pid)))
            continue
        p = subprocess.Popen([path, '--bind','127.0.0.1','--port','0','--ollama-url',f'http://{addr}'],
            stderr=subprocess.PIPE, text=True, env=dict(os.environ, RUST_LOG='warn,ollama_proxy::server=info', CACHE_FILE=''))
        procs.append(p)
        for line in p.stderr:
            m = re.search(r'listen=(\S+)', line)
            if m: break
        targets.append((name, p, m.group(1), [p.pid]))
    res = {n: [] for n,_ in bins}
    for r in range(rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for name, p, a, pids in order:
            u0, s0 = cpu(pids); fu0, fs0 = cpu([fake.pid])
            r0=resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(['wrk','--latency','-t',str(min(conns,2)),'-c',str(conns),'-d',f'{secs}s',f'http://{a}/api/version'], capture_output=True, text=True).stdout
            u1, s1 = cpu(pids); fu1, fs1 = cpu([fake.pid])
            r1=resource.getrusage(resource.RUSAGE_CHILDREN)
            n = int(re.search(r'(\d+) requests in', out).group(1))
            rps = float(re.search(r'Requests/sec:\s+(\S+)', out).group(1))
            p99 = re.search(r'99%\s+(\S+)', out).group(1)
            w=((r1.ru_utime-r0.ru_utime)+(r1.ru_stime-r0.ru_stime))*1e6/n
            res[name].append((rps, (u1-u0)/n, (s1-s0)/n, p99, (fu1-fu0+fs1-fs0)/n, w))
            print(f'{name:10} c={conns} rps={rps:8.0f} user={(u1-u0)/n:5.2f} sys={(s1-s0)/n:5.2f} tot={(u1-u0+s1-s0)/n:5.2f} fake={(fu1-fu0+fs1-fs0)/n:5.2f} wrk={w:5.2f} p99={p99}', flush=True)
    for name in res:
        rs = res[name]
        med = lambda i: st.median(x[i] for x in rs)
        print(f'SUM {name:10} c={conns} n={len(rs)} rps med={med(0):8.0f} user med={med(1):5.2f} sys med={med(2):5.2f} tot med={st.median(x[1]+x[2] for x in rs):5.2f} fake med={med(4):5.2f} wrk med={med(5):5.2f}')
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try: p.wait(10)
        except Exception: p.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
