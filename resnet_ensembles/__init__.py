"""resnet_ensembles: Veit et al. (2016), "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", reproduced and extended in JAX/Flax."""
