# Paired gaps of a pilot store: python benchmarks/pilots/paired_gaps.py (reads /tmp/pilot*/runs/*/results.parquet)
import sys, glob, numpy as np, pandas as pd
from scipy import stats
def t(d):
    d=np.asarray(d); n=len(d); m=d.mean(); s=d.std(ddof=1); se=s/np.sqrt(n)
    h=stats.t.ppf(.975,n-1)*se; p=stats.t.sf(m/se,n-1)
    return f"{m:+.3f} (sd {s:.3f}, d {m/s:+.2f}) CI {m-h:+.3f}..{m+h:+.3f} p1 {p:.3f} n{n}"
for st in sorted(glob.glob("/tmp/pilot*/runs/*/results.parquet")):
    df=pd.read_parquet(st); df=df[(df.kind=="finetune")&(df.status=="done")]
    def col(method, F=None):
        x=df[df.method==method]
        if F is not None: x=x[x.animal_fraction==F]
        return x.set_index("seed").test_iou_binary
    print(st.split("/")[-2])
    for name,a,b in [("ft F1-F0",col("mae",1.0),col("mae",0.0)),("probe F1-F0",col("probe",1.0),col("probe",0.0)),
                     ("ft F1-scratch",col("mae",1.0),col("supervised_mae")),("probe F1-random",col("probe",1.0),col("random_probe")),
                     ("probe F0-random",col("probe",0.0),col("random_probe"))]:
        j=a.index.intersection(b.index)
        if len(j)>1: print(f"  {name:16} {t(a[j]-b[j])}   means {a[j].mean():.3f} vs {b[j].mean():.3f}")
