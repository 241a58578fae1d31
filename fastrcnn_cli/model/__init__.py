"""The Fast R-CNN network: backbones (:mod:`.backbones`), RoI pooling, fc6/fc7 and the two sibling heads."""
