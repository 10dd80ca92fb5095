"""Run stage chains on Edge TPUs or the CPU. Needs numpy, pillow and a tflite runtime only.

Public API (pycoral-like, functions over data):
  runtime.load_runtime(), runtime.make_interpreter(model, num_threads=None, xnnpack=True, ...)
  edgetpu.list_edge_tpus(), edgetpu.is_compiled_model(path), edgetpu.delegate_cache(runtime)
  devices.parse_devices(text, count), devices.assign_devices(compiled, tpus, requested=None)
  stages.load_stages(run_dir, manifest, devices=None, num_threads=None, xnnpack=True)
  chain.StageChain(stages).run(feeds)                      one stage after another
  pipeline.PipelinedRunner(chain).push/pop/stream          one thread per stage, bounded queues
  pipelined_model_runner.PipelinedModelRunner(interpreters)  drop-in for pycoral's
  classify.classify(chain, pixels), classify.evaluate(chain, images, labels)
  doctor.gather(), doctor.diagnose(environment)
  bench.bench_chain(chain, feeds)
"""
