"""Sum cubecl's per-launch profile log by kernel name (run the binary with
CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG=FILE; usage: python3 bench/cubecl_profile_summary.py FILE
[FRACTION], FRACTION the trailing share of launches to sum, default 0.25)."""
import re, sys, collections
def dur(s):
    m = re.match(r'([\d.]+)(ns|µs|ms|s)$', s.strip())
    return float(m.group(1)) * {'ns': 1e-9, 'µs': 1e-6, 'ms': 1e-3, 's': 1}[m.group(2)] if m else None
ents = []
for line in open(sys.argv[1], errors='replace'):
    if line.startswith('| '):
        p = line.split('|')
        d = dur(p[1]) if len(p) > 2 else None
        if d is not None:
            ents.append((d, '|'.join(x.strip() for x in p[2:4])))
frac = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
last = ents[int(len(ents) * (1 - frac)):]
tot, cnt = collections.Counter(), collections.Counter()
for d, k in last:
    tot[k] += d; cnt[k] += 1
print('entries', len(ents), 'last', len(last), 'total s', sum(tot.values()))
for k, v in tot.most_common(25):
    print(f'{v:9.4f}s {cnt[k]:8d} {k[:120]}')
for name in ['Matmul', 'Reduce']:
    xs = sorted(d for d, k in last if k.startswith(name))
    if xs:
        print(name, 'ms quantiles', [round(xs[int(q * (len(xs) - 1))] * 1e3, 3) for q in (0, .1, .25, .5, .75, .9, 1)])
