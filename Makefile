# The two commands of the README:  make demo  and  make test.
PYTHON ?= python3
VENV   := .venv
PI     := .venv-pi
BIN    := $(VENV)/bin
RUN    ?= runs/demo
EPOCHS ?= 8
STAGES ?= 3

.PHONY: demo test venv venv-pi system-packages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,test]'
	touch $@

# A deploy-only environment as on many Raspberry Pis: tflite-runtime 2.14 with numpy < 2,
# no TensorFlow, no ai-edge-litert. Tests run the deploy commands in it.
$(PI)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PI)
	$(PI)/bin/pip install --quiet --upgrade pip
	$(PI)/bin/pip install --quiet 'numpy<2' pillow tflite-runtime==2.14.0 grpcio grpcio-health-checking protobuf
	$(PI)/bin/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed
venv-pi: $(PI)/.installed

demo: venv
	$(BIN)/python -m training --dataset digits --model splitnet --epochs $(EPOCHS) --run $(RUN) --overwrite
	$(BIN)/python -m quantize --run $(RUN) --stages $(STAGES)
	$(BIN)/python -m compile --run $(RUN)
	$(BIN)/python -m deploy --run $(RUN) --eval
	$(BIN)/python -m deploy verify --run $(RUN) --samples 256
	$(BIN)/python -m deploy summary --run $(RUN)
	$(BIN)/python -m deploy report --run $(RUN)

# Real servers and a real browser for the tests: Debian's redis-server and chromium.
system-packages:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium chromium-driver >/dev/null)

test: venv venv-pi system-packages
	STRICT_TESTS=1 DEPLOY_ONLY_PYTHON=$(abspath $(PI))/bin/python $(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) $(PI) runs/demo
