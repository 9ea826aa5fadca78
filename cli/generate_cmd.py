"""`clo-mlx generate`: answer a prompt with a model (default: the demo model), with or without adapters."""

from __future__ import annotations

import typer


def generate(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeat for several)."),
    model: str | None = typer.Option(
        None, help="Local model folder or cached HF repo id (default: the built-in demo model)."
    ),
    adapter_path: str | None = typer.Option(None, help="Adapter folder to apply."),
    max_tokens: int = typer.Option(100, help="Maximum tokens per answer."),
    chat_template: bool = typer.Option(
        True, "--chat-template/--no-chat-template", help="Wrap the prompt as a user turn."
    ),
    detect: bool = typer.Option(
        True, "--detect/--no-detect", help="Show the language detected in each answer."
    ),
    languages: str = typer.Option("en,sw", help="Candidate languages for --detect."),
) -> None:
    """Greedy answers to the prompts (batched, with a KV cache)."""
    from clo_mlx.demo import DEMO_MODEL
    from clo_mlx.eval.fidelity import generate_responses, judge
    from clo_mlx.models import load_model
    from clo_mlx.translate.langid import check_language

    if max_tokens < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--max-tokens")
    cands = [c.strip() for c in languages.split(",") if c.strip()]
    if detect:  # checked before the model is loaded and answers are generated
        if not cands:
            raise typer.BadParameter("no language codes given", param_hint="--languages")
        for c in cands:
            try:
                check_language(c)
            except ValueError as e:
                raise typer.BadParameter(str(e), param_hint="--languages") from None
    mdl, tokenizer = load_model(model or str(DEMO_MODEL), adapter_path=adapter_path)
    answers = generate_responses(
        mdl, tokenizer, prompt, max_tokens=max_tokens, chat_template=chat_template
    )
    for p, a in zip(prompt, answers, strict=True):
        typer.echo(f"> {p}")
        typer.echo(a)
        if detect:
            typer.echo(f"  [language: {judge([a], cands[0], cands)[0]}]")
        typer.echo("")
