"""Triton python-backend model: class index of the highest logit -> its label (BYTES)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

LABELS = np.array([b"cat", b"dog", b"bird", b"fish"], dtype=object)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            labels = LABELS[np.argmax(logits, axis=-1)].reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("label", labels)]))
        return responses
