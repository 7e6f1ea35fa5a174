# The one server (API + app) as a container: docker build -t ticket-triage . && docker run -p 7860:7860 ticket-triage
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
# PyTorch's CPU wheel index: on PyPI, torch==2.13.0 is the CUDA build (several GB); torch is only needed to build.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY . .
# Build the artifacts at image build time, so a replica is ready as soon as the model is loaded.
RUN python -m building build
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health')"
CMD ["python", "app/main.py"]
