"""Control models: the networks that judge generated images (CLIP, attribute classifiers).

Every control model takes images in [0, 1], shape ``(B, 3, H, W)``, and is differentiable with
respect to them, so that energies built on it can steer a flow.
"""
