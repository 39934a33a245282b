"""MLServer's peer in bench/service_load.py: a custom runtime serving the ONNX model with onnxruntime.

Runs in MLServer's own environment (bench/.peers/mlserver), never imported by Evergreen. The request is the
V2 inference protocol MLServer speaks: one tensor per model input, [N, 1], FP32 or BYTES; the answer is the
probabilities [N, K] and the labels [N]. No log, no checks beyond MLServer's own.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {}
        for tensor in payload.inputs:
            if tensor.datatype == "BYTES":
                values = np.array(StringCodec.decode_input(tensor), dtype=object)
            else:
                values = NumpyCodec.decode_input(tensor).astype(np.float32)
            feed[tensor.name] = values.reshape(-1, 1)
        probabilities, labels = self.session.run(["probabilities", "label"], feed)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(
                    name="probabilities",
                    shape=list(probabilities.shape),
                    datatype="FP32",
                    data=probabilities.ravel().tolist(),
                ),
                ResponseOutput(name="label", shape=[len(labels)], datatype="BYTES", data=[str(x) for x in labels]),
            ],
        )
