"""Run stage chains on Edge TPUs or the CPU. Needs numpy, pillow and a tflite runtime only.

Public API (pycoral-like, functions over data), by subpackage:
  core.runtime.load_runtime(), core.runtime.make_interpreter(model, num_threads=None, xnnpack=True, ...)
  core.edgetpu.list_edge_tpus(), core.edgetpu.is_compiled_model(path), core.edgetpu.delegate_cache(runtime)
  core.devices.parse_devices(text, count), core.devices.assign_devices(compiled, tpus, requested=None)
  core.stages.load_stages(run_dir, manifest, devices=None, num_threads=None, tpus=None, xnnpack=True,
                          fallback=False)
  core.open.open_run(run_dir, Runtime(...)) -> (manifest, StageChain)
  core.chain.StageChain(stages).run(feeds)                 one stage after another
  core.fallback.run_stage(stage, values)                   an Edge TPU failing mid-run: fail, or go on on the CPU
  pipeline.runner.PipelinedRunner(chain, copies=None)      one thread per stage (copies of slow ones), bounded queues
  pipeline.pipelined_model_runner.PipelinedModelRunner(interpreters)  drop-in for pycoral's
  core.classify.classify(chain, pixels), core.classify.evaluate(chain, images, labels)
  cli.doctor.gather(), cli.doctor.diagnose(environment)
  pipeline.bench.bench_chain(chain, feeds)
"""
