import json,sys,collections
rows=[json.loads(l) for l in open(sys.argv[1])]
acc=collections.defaultdict(list); pred=collections.Counter(); gt=collections.defaultdict(collections.Counter)
for r in rows:
    f=r['category']['family']; acc[f].append(r['correct']); pred[r['pred']]+=1; gt[f][r['gt']]+=1
for k,v in sorted(acc.items()): print(f"{k:10s} {len(v):3d} acc {sum(v)/len(v):.2f}  majority {max(gt[k].values())/len(v):.2f}")
print('pred dist', dict(pred), 'overall', sum(r['correct'] for r in rows)/len(rows))
