import json,subprocess,sys,time,concurrent.futures as cf
lab=sys.argv[1]
sim=json.load(open(sys.argv[2]))
simv={r['id']:{o:e['hops'] for o,e in r['view'].items() if not e['stale']} for r in sim['result']['per_router']}
def lab_view(n):
    out=subprocess.run(['./target/release/wuos','status','--lab',lab,n,'--json'],capture_output=True,text=True)
    s=json.loads(out.stdout)
    return n,{e['origin']:e['hops'] for e in s['view'] if not e.get('stale')}
t0=time.time()
with cf.ThreadPoolExecutor(8) as ex: labv=dict(ex.map(lab_view, simv.keys()))
print(f"polled {len(labv)} daemons in {time.time()-t0:.1f} s")
same=[n for n in simv if labv.get(n)==simv[n]]
print(f"identical views: {len(same)} of {len(simv)}")
missing=extra=hopdiff=0
for n in simv:
    l,s=labv.get(n,{}),simv[n]
    missing+=len(set(s)-set(l)); extra+=len(set(l)-set(s)); hopdiff+=sum(1 for o in set(s)&set(l) if s[o]!=l[o])
tot=sum(len(v) for v in simv.values())
print(f"sim view entries {tot}; absent in the lab {missing}; only in the lab {extra}; other hop count {hopdiff}")
diffs=[n for n in simv if labv.get(n)!=simv[n]][:5]
for n in diffs:
    l,s=labv.get(n,{}),simv[n]
    print(n,'missing',sorted(set(s)-set(l))[:8],'extra',sorted(set(l)-set(s))[:8],'hops',[(o,s[o],l[o]) for o in set(s)&set(l) if s[o]!=l[o]][:5])
