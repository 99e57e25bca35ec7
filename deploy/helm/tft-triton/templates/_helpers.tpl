{{/* Names and labels. */}}
{{- define "tft-triton.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tft-triton.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tft-triton.labels" -}}
{{ include "tft-triton.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
tft.dev/model: {{ .Values.model.name | quote }}
{{- end -}}

{{/* Every value that would render a broken deployment fails here, with one message. */}}
{{- define "tft-triton.validate" -}}
{{- $v := .Values -}}
{{- if not $v.model.name -}}
{{- fail "model.name is required: the served ensemble's name (tft serve build --name); tft serve deploy writes it" -}}
{{- end -}}
{{- if not $v.model.canary -}}
{{- fail "model.canary is required: the liveness probe's request; write the values with `tft serve deploy`" -}}
{{- end -}}
{{- if not (has $v.device (list "cpu" "gpu")) -}}
{{- fail (printf "device must be cpu or gpu, not %q" $v.device) -}}
{{- end -}}
{{- if and (eq $v.device "cpu") (gt (int $v.resources.gpu) 0) -}}
{{- fail (printf "resources.gpu is %d but device is cpu: set device: gpu, or resources.gpu: 0" (int $v.resources.gpu)) -}}
{{- end -}}
{{- if and (eq $v.device "gpu") (lt (int $v.resources.gpu) 1) -}}
{{- fail "device is gpu but resources.gpu is 0: request at least 1 GPU" -}}
{{- end -}}
{{- if eq $v.modelRepository.source "pvc" -}}
{{- if not $v.modelRepository.pvc.claimName -}}
{{- fail "modelRepository.pvc.claimName is required with source: pvc (or use source: url)" -}}
{{- end -}}
{{- else if eq $v.modelRepository.source "url" -}}
{{- if not (regexMatch "^(s3|gs|as)://.+" $v.modelRepository.url) -}}
{{- fail (printf "modelRepository.url %q must be s3://, gs:// or as:// followed by a path" $v.modelRepository.url) -}}
{{- end -}}
{{- if not $v.modelRepository.credentialsSecret -}}
{{- fail (printf "modelRepository.credentialsSecret is required with url %s: the Secret holding the object store's credentials" $v.modelRepository.url) -}}
{{- end -}}
{{- else -}}
{{- fail (printf "modelRepository.source must be pvc or url, not %q" $v.modelRepository.source) -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) -}}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" -}}
{{- end -}}
{{- end -}}

{{/* The repository path Triton is given. */}}
{{- define "tft-triton.repository" -}}
{{- if eq .Values.modelRepository.source "url" -}}
{{ .Values.modelRepository.url }}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{/* Queue time per request of the ensemble, as a rate over the window: Triton's counters are cumulative. */}}
{{- define "tft-triton.queueQuery" -}}
{{- $models := prepend .Values.model.steps .Values.model.name | join "|" -}}
sum(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>,model=~"{{ $models }}"}[{{ .Values.autoscaling.window }}])) by (<<.GroupBy>>) / clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>,model="{{ .Values.model.name }}"}[{{ .Values.autoscaling.window }}])) by (<<.GroupBy>>), 1e-9)
{{- end -}}
