from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.sandboxing import image


class Command(BaseCommand):
    help = "Build the sandbox image (offline from the Debian mirror by default, or from sandbox/Dockerfile)."

    def add_arguments(self, parser):
        parser.add_argument("--if-missing", action="store_true", help="do nothing when SANDBOX_IMAGE exists")
        parser.add_argument("--dockerfile", action="store_true", help="build sandbox/Dockerfile (needs a registry)")
        parser.add_argument("--reference", default="", help=f"tag to give the image (default {settings.SANDBOX_IMAGE})")

    def handle(self, *args, if_missing=False, dockerfile=False, reference="", **options):
        reference = reference or settings.SANDBOX_IMAGE
        if if_missing:
            found = image.find_image(reference)
            if found is not None:
                self.stdout.write(f"sandbox image {reference} present ({found.id})")
                return
        self.stdout.write(f"building sandbox image {reference} ({'Dockerfile' if dockerfile else 'offline'})…")
        try:
            result = image.build_from_dockerfile(reference) if dockerfile else image.build_offline(reference)
        except Exception as exc:
            raise CommandError(f"sandbox image build failed: {exc}") from exc
        self.stdout.write(
            f"sandbox image {result.reference} {'built' if result.built else 'reused'} ({result.image_id})"
        )
