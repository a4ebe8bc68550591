"""Readers (and, for the skeleton text formats, writers) for the paper's datasets in their on-disk formats.

One module per format, all returning typed dataclasses in metres (3D) or pixels (2D):

- `joint_sets`: joint names of SMPL 24, Kinect v1 (OpenNI/NITE) 15, Kinect v2 25, COCO 17 and LSP 14; their
  correspondence to SMPL joints; the canonical USCG joint set; left/right flip permutations; the Kinect
  camera frame and its conversion to FuseMesh's OpenCV camera frame; `SkeletonSequence`; `DatasetFormatError`.
- `pku_mmd`: PKU-MMD skeleton (.txt, 2 bodies x 25 Kinect v2 joints per line) and label files; media paths.
- `cad60`: CAD-60 skeleton (.txt, 15 OpenNI joints per line, mm), activityLabel.txt, RGB_/Depth_ PNG frames.
- `coco`: COCO person-keypoints JSON.
- `lsp`: LSP / LSP-extended `joints.mat`.
- `amass`: AMASS / MoSh++ `*_poses.npz` (SMPL-H pose, betas, translation).

Nothing here imports torch; importing a module has no side effects.
"""
