import time, torch, numpy as np, pandas as pd
from physeg.profiles import get_profile
from physeg.evaluation.runs import train_models, load_models, test_parameters, _simulate
from physeg.evaluation.grid import uncertainty_subset
from physeg.evaluation.metrics import dice_per_tissue
from physeg.data.cohort import load_split
from physeg.inference.predictor import Predictor
from physeg.conventions import stable_seed
torch.set_num_threads(2)
p = get_profile('demo')
folders = train_models(p)
rows=[]
t0=time.time()
for base in p.uncertainty_models:
  for seq in p.sequences:
    epi, par = load_models({k: folders[k] for k in [(f"{base}-Epistemic", seq), (base, seq)]}).values()
    for split in ("test",):
      for subj in load_split(p, split):
        for dist in ("IoD", "OoD"):
          params = test_parameters(p, seq, dist)
          idx = uncertainty_subset(params, seq, 2)
          imgs, feats = _simulate(subj, seq, params[idx])
          for i in range(len(idx)):
            pd_ = Predictor.from_profile(par, p).labels(imgs[i], feats[i])[0]
            d0 = dice_per_tissue(pd_, subj.pgs)
            for n in (4, 10):
              s = Predictor.from_profile(epi, p).sample(imgs[i], feats[i], n=n, seed=stable_seed(0, 'x', subj.subject_id, dist, i) % 2**63, maps=True)
              d1 = dice_per_tissue(s.labels.long(), subj.pgs)
              rows.append(dict(model=base, seq=seq, subj=subj.subject_id, dist=dist, n=n, **{f"d_{k}": d1[k]-d0[k] for k in d0}, **{f"par_{k}": d0[k] for k in d0}))
    print(base, seq, time.time()-t0, flush=True)
df=pd.DataFrame(rows); df.to_csv('/tmp/s28/epi_test.csv', index=False)
print(df.groupby(['model','seq','dist','n'])[['d_GM','d_WM','d_CSF','par_GM','par_WM']].mean().round(3))
