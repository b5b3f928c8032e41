import numpy as np
rng=np.random.default_rng(0)
BT=np.array([[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]],float)
AT=np.array([[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]],float)
G=np.array([[1/4,0,0],[-1/6,-1/6,-1/6],[-1/6,1/6,-1/6],[1/24,1/12,1/6],[1/24,-1/12,1/6],[0,0,1]])
A=AT.T
# forward check
d=rng.standard_normal((6,6)); g=rng.standard_normal((3,3))
Y=AT@((G@g@G.T)*(BT@d@BT.T))@A
Yd=np.array([[np.sum(d[i:i+3,j:j+3]*g) for j in range(4)] for i in range(4)])
print("fwd",abs(Y-Yd).max())
dy=rng.standard_normal((4,4))
dW=G.T@((A@dy@AT)*(BT@d@BT.T))@G
dWd=np.array([[np.sum(dy*d[a:a+4,b:b+4]) for b in range(3)] for a in range(3)])
print("wgrad",abs(dW-dWd).max())
