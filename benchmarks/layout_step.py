r"""A whole ResNet-20 training step (pure JAX: preact blocks, batch-statistics BN, type-A shortcuts) in
NHWC and in NCHW, alternating, batch 128, fp32 (not a test). benchmarks/conv_forms.py found single
convolutions a little faster in NCHW; this checks whether a whole network gains.

  ./run.sh python -m benchmarks.layout_step
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
def make(layout):
  C = -1 if layout=="NHWC" else 1
  SP = (1,2) if layout=="NHWC" else (2,3)
  dn = (layout, "HWIO", layout)
  def conv(x,w,s): return jax.lax.conv_general_dilated(x,w,(s,s),((1,1),(1,1)),dimension_numbers=dn)
  def bn(x,g,b):
    red = tuple(i for i in range(4) if i != (C % 4))
    m = x.mean(red, keepdims=True); v = ((x-m)**2).mean(red, keepdims=True)
    shape = [1,1,1,1]; shape[C] = -1
    return (x-m)*jax.lax.rsqrt(v+1e-5)*g.reshape(shape)+b.reshape(shape)
  def shortcut(x, f, s):
    if s>1: x = x[:,::2,::2,:] if layout=="NHWC" else x[:,:,::2,::2]
    extra = f - x.shape[C]
    if extra>0:
      pad=[(0,0)]*4; pad[C % 4]=(0,extra); x=jnp.pad(x,pad)
    return x
  def net(p, x):
    if layout=="NCHW": x = jnp.transpose(x,(0,3,1,2))
    h = conv(x,p["stem"],1)
    for (w1,w2,g1,b1,g2,b2,f,s) in p["blocks"]:
      r = conv(jax.nn.relu(bn(h,g1,b1)),w1,s)
      r = conv(jax.nn.relu(bn(r,g2,b2)),w2,1)
      h = shortcut(h,f,s)+r
    h = jax.nn.relu(h).mean(SP)
    return h @ p["head"]
  return net
rng=np.random.default_rng(0)
blocks=[]; cin=16
for stage,f in enumerate([16,32,64]):
  for i in range(3):
    s = 2 if (stage>0 and i==0) else 1
    blocks.append((jnp.asarray(rng.standard_normal((3,3,cin,f))*0.1,jnp.float32),jnp.asarray(rng.standard_normal((3,3,f,f))*0.1,jnp.float32),
                   jnp.ones(cin),jnp.zeros(cin),jnp.ones(f),jnp.zeros(f),f,s)); cin=f
params={"stem":jnp.asarray(rng.standard_normal((3,3,3,16))*0.1,jnp.float32),"head":jnp.asarray(rng.standard_normal((64,10))*0.1,jnp.float32)}
x=jnp.asarray(rng.standard_normal((128,32,32,3)),jnp.float32); y=jnp.asarray(rng.integers(0,10,128))
res={}
for layout in ["NHWC","NCHW","NHWC","NCHW"]:
  net=make(layout)
  def loss(p, bl):
    pp=dict(p); pp["blocks"]=[tuple(b)+m for b,m in zip(bl,[(f,s) for *_,f,s in blocks])]
    lg=net(pp,x); return -jnp.mean(jax.nn.log_softmax(lg)[jnp.arange(128),y])
  bl=[b[:6] for b in blocks]
  g=jax.jit(jax.value_and_grad(loss,argnums=(0,1)))
  jax.block_until_ready(g(params,bl))
  ts=[]
  for r in range(6):
    t=time.perf_counter(); jax.block_until_ready(g(params,bl)); ts.append(time.perf_counter()-t)
  res.setdefault(layout, []).append(min(ts))
  print(layout, "train step %.1f ms -> %.0f img/s" % (min(ts) * 1e3, 128 / min(ts)), flush=True)
print("NCHW / NHWC speed: %.2fx" % (min(res["NHWC"]) / min(res["NCHW"])))
