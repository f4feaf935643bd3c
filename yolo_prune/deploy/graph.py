"""What is traced into an exported graph: the decoded detector, optionally with NMS inside.

Without NMS the graph's output is ``predictions [B, N, 5 + nc]`` (cx, cy, w, h in input pixels,
objectness, class probabilities): the layout ``yolo_prune.evaluation.non_max_suppression``
takes, the same for every family (``DetectorAdapter.export_module``).

With NMS (``EndToEndDetector``) the output is ``detections [K, 7]``: batch index, x1, y1, x2,
y2, score, class, for every image of the batch, ordered by image, then class, then descending
score. NMS is ONNX's ``NonMaxSuppression`` operator, which ONNX Runtime, OpenVINO and
TensorRT (>= 8.5) run natively; per class, at most ``max_det`` boxes per image and class, a box
is kept when its score is above ``conf_thres`` and suppressed when its IoU with a better box of
its class is above ``iou_thres``. Score = objectness x class probability (objectness alone with
one class, as ``non_max_suppression``). The PyTorch forward computes exactly that (with
torchvision's NMS), so the export can be checked against it.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

DETECTIONS_COLUMNS = ("batch_index", "x1", "y1", "x2", "y2", "score", "class")

# (cx, cy, w, h) @ _CXCYWH_TO_XYXY = (x1, y1, x2, y2); a matmul traces into one MatMul node
_CXCYWH_TO_XYXY = ((1.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 1.0), (-0.5, 0.0, 0.5, 0.0), (0.0, -0.5, 0.0, 0.5))


class OnnxNonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``): selected ``[K, 3]`` (batch, class, box).

    ``forward`` is the operator's reference semantics in PyTorch; ``symbolic`` emits the operator
    when the legacy (TorchScript) exporter traces it.
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: torch.Tensor,  # noqa: ANN001
                iou_thres: torch.Tensor, conf_thres: torch.Tensor) -> torch.Tensor:
        """Runs the op (a stand-in with the right output shape while tracing)."""
        selected = []
        limit, iou, conf = int(max_per_class), float(iou_thres), float(conf_thres)
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                candidates = (scores[b, c] > conf).nonzero().flatten()
                keep = torchvision.ops.nms(boxes[b, candidates], scores[b, c, candidates], iou)[:limit]
                index = candidates[keep]
                selected.append(torch.stack((torch.full_like(index, b), torch.full_like(index, c), index), 1))
        return torch.cat(selected) if selected else torch.zeros(0, 3, dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thres, conf_thres):  # noqa: ANN001,ANN205
        """The ONNX node this op exports to (traced by the legacy exporter)."""
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_thres, conf_thres, center_point_box_i=0)


class EndToEndDetector(nn.Module):
    """A decoded detector followed by NMS: images -> ``detections [K, 7]`` (module docstring)."""

    def __init__(self, detector: nn.Module, *, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 max_det: int = 100) -> None:
        super().__init__()
        if not 0.0 <= conf_thres < 1.0 or not 0.0 < iou_thres <= 1.0 or max_det < 1:
            raise ValueError(f"NMS settings out of range (conf_thres={conf_thres}, iou_thres={iou_thres}, "
                             f"max_det={max_det}); use 0 <= conf < 1, 0 < iou <= 1, max_det >= 1")
        self.detector = detector
        self.register_buffer("to_xyxy", torch.tensor(_CXCYWH_TO_XYXY), persistent=False)
        self.register_buffer("max_det", torch.tensor([max_det], dtype=torch.long), persistent=False)
        self.register_buffer("iou_thres", torch.tensor([iou_thres]), persistent=False)
        self.register_buffer("conf_thres", torch.tensor([conf_thres]), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> the exported output."""
        pred = self.detector(images)  # [B, N, 5 + nc]
        n, nc = pred.shape[1], pred.shape[2] - 5
        boxes = pred[..., :4] @ self.to_xyxy.to(pred.dtype)
        scores = pred[..., 4:5] if nc == 1 else pred[..., 5:] * pred[..., 4:5]  # [B, N, nc]
        selected = OnnxNonMaxSuppression.apply(boxes, scores.transpose(1, 2).contiguous(), self.max_det,
                                               self.iou_thres.to(pred.dtype), self.conf_thres.to(pred.dtype))
        batch, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
        flat_box = batch * n + box  # 1-D gathers export to plain Gather nodes on every runtime
        det_boxes = boxes.reshape(-1, 4).index_select(0, flat_box)
        det_scores = scores.reshape(-1).index_select(0, flat_box * scores.shape[2] + cls)
        return torch.cat((batch[:, None].to(pred.dtype), det_boxes, det_scores[:, None], cls[:, None].to(pred.dtype)),
                         1)
