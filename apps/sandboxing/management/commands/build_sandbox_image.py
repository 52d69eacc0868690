import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.sandboxing import catalog, image


class Command(BaseCommand):
    help = (
        "Build the sandbox image (offline from the Debian mirror by default, or from sandbox/Dockerfile), "
        "or with --runtime the image of one or more runtimes of sandbox/runtimes.json."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="do nothing when the image exists and carries this checkout's sandbox helper",
        )
        parser.add_argument("--dockerfile", action="store_true", help="build sandbox/Dockerfile (needs a registry)")
        parser.add_argument("--reference", default="", help=f"tag to give the image (default {settings.SANDBOX_IMAGE})")
        parser.add_argument(
            "--runtime",
            action="append",
            default=[],
            metavar="NAME",
            help=(
                "build this runtime's image (repeatable; 'all' for every one, 'prebuilt' for those setup builds): "
                f"{', '.join(catalog.definitions())}"
            ),
        )

    def handle(self, *args, if_missing=False, dockerfile=False, reference="", runtime=(), **options):
        if runtime:
            self._build_runtimes(list(runtime), if_missing=if_missing)
            return
        reference = reference or settings.SANDBOX_IMAGE
        if if_missing:
            found = image.current_image(reference)
            if found is not None:
                self.stdout.write(f"sandbox image {reference} present ({found.id})")
                return
            if image.find_image(reference) is not None:
                self.stdout.write(f"sandbox image {reference} predates this sandbox helper: building it again")
        self.stdout.write(f"building sandbox image {reference} ({'Dockerfile' if dockerfile else 'offline'})…")
        try:
            result = image.build_from_dockerfile(reference) if dockerfile else image.build_offline(reference)
        except Exception as exc:
            raise CommandError(f"sandbox image build failed: {exc}") from exc
        self.stdout.write(
            f"sandbox image {result.reference} {'built' if result.built else 'reused'} ({result.image_id})"
        )

    def _build_runtimes(self, names: list[str], *, if_missing: bool) -> None:
        known = catalog.definitions()
        if "all" in names:
            names = list(known)
        elif "prebuilt" in names:
            names = [name for name in names if name != "prebuilt"] + catalog.prebuilt()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CommandError(f"unknown runtime(s): {', '.join(unknown)}; known: {', '.join(known)}")
        for name in names:
            definition = known[name]
            if if_missing and image.current_image(definition.image) is not None:
                self.stdout.write(f"runtime {name}: image {definition.image} present")
                continue
            self.stdout.write(f"runtime {name}: building {definition.image}…")
            started = time.monotonic()
            try:
                result = image.build_runtime(definition)
            except Exception as exc:
                raise CommandError(f"runtime {name}: image build failed: {exc}") from exc
            size_mb = image.find_image(result.reference).attrs["Size"] / 1e6
            self.stdout.write(
                f"runtime {name}: {result.reference} {'built' if result.built else 'reused'} "
                f"in {time.monotonic() - started:.0f} s, {size_mb:.0f} MB ({result.image_id})"
            )
