"""From domain errors to gRPC statuses: the kit's translation (service_kit/error_status.py), under the
name the servicers import it by."""
from __future__ import annotations

from service_kit.error_status import INTERNAL_MESSAGE as INTERNAL_MESSAGE
from service_kit.error_status import STATUS_OF_KIND as STATUS_OF_KIND
from service_kit.error_status import status_for as status_for
from service_kit.error_status import translate_errors as translate_errors
