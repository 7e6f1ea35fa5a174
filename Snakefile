# Every command of the project, in one place. `snakemake -c2 <rule or file>`; `snakemake -l` lists them.
configfile: "config.yaml"

DATA = ["data/articles.csv", "data/train.csv", "data/eval.csv", "data/orders.py"]
ARTIFACTS = multiext("artifacts/", "manifest.json", "articles.faiss", "articles.json", "classifier.joblib", "orders.bloom")


rule all:
    input:
        ARTIFACTS,
        "reports/eval_metrics.json",


rule artifacts:
    """The faiss index, classifier, Bloom filter and manifest, built from data/."""
    input:
        DATA,
        "model.py",
    output:
        ARTIFACTS,
    shell:
        "python model.py build"


rule eval:
    """Accuracy and macro-F1 of the whole pipeline on the evaluation set."""
    input:
        ARTIFACTS,
        "data/eval.csv",
    output:
        "reports/eval_metrics.json",
    shell:
        "python model.py eval > {output}"


rule test:
    """The test suite (the README's test command)."""
    shell:
        "python -m pytest -q"


rule bench_pipeline:
    """run_batch against a loop of run on 512 tickets."""
    input:
        ARTIFACTS,
    output:
        "bench/out/pipeline.json",
    shell:
        "python bench/bench_pipeline.py --tickets {config[bench_tickets]} > {output}"
