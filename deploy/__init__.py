"""Run stage chains on Edge TPUs or the CPU. Needs numpy, pillow and a tflite runtime only.

Public API (pycoral-like, functions over data):
  runtime.load_runtime(), runtime.make_interpreter(model, ...)
  edgetpu.list_edge_tpus(), edgetpu.is_compiled_model(path)
  stages.load_stages(run_dir, manifest, devices=None)
  chain.StageChain(stages).run(feeds)
  classify.classify(chain, pixels), classify.evaluate(chain, images, labels)
"""
