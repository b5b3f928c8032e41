import torch, torch.nn.functional as F
import stylize_fast as sf
from stylize_fast.ops import padded_conv
ops = torch.ops.stylize_fast
for (n,c,o,h,w,mode,cl,dt) in [(2,40,36,13,11,1,True,torch.float32),(1,32,64,8,8,0,True,torch.float32),(3,33,35,9,17,2,False,torch.float32),(2,64,48,10,7,1,True,torch.bfloat16)]:
    g=torch.Generator().manual_seed(0)
    x=torch.randn(n,c,h,w,generator=g).to(dt); wt=(torch.randn(o,c,3,3,generator=g)/(9*c)**.5).to(dt)
    if cl: x=x.contiguous(memory_format=torch.channels_last)
    gy=torch.randn(n,o,h,w,generator=g).to(dt)
    if cl: gy=gy.contiguous(memory_format=torch.channels_last)
    with sf.config.override(conv_algo="winograd"):
        print(padded_conv.cpu_algorithm(x,wt,(1,1),(1,1),mode,weight_grad=True))
        _,gw,gb=ops.padded_conv2d_bwd(gy,x,wt,[1,1],[1,1],mode,[False,True,True])
    xp=F.pad(x.double(),(1,1,1,1),mode=["constant","reflect","replicate"][mode])
    rw=torch.ops.aten.convolution_backward(gy.double(),xp,wt.double(),None,[1,1],[0,0],[1,1],False,[0,0],1,[False,True,False])[1]
    print(((gw.double()-rw).abs().max()/rw.abs().max()).item(), gw.dtype)
