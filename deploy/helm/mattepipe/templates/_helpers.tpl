{{/* Names ---------------------------------------------------------------------------- */}}
{{- define "mattepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mattepipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One component's name: <fullname>-<component> (40 + 23 characters at most). */}}
{{- define "mattepipe.component" -}}
{{- printf "%s-%s" (include "mattepipe.fullname" .root) .component -}}
{{- end -}}

{{- define "mattepipe.labels" -}}
app.kubernetes.io/name: {{ include "mattepipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mattepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mattepipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images -------------------------------------------------------------------------- */}}
{{- define "mattepipe.repo" -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s" (trimSuffix "/" .root.Values.image.registry) .repository -}}
{{- else -}}
{{- .repository -}}
{{- end -}}
{{- end -}}

{{- define "mattepipe.image.light" -}}
{{- $i := .Values.image.light -}}
{{- printf "%s:%s" (include "mattepipe.repo" (dict "root" . "repository" $i.repository)) (toString $i.tag) -}}
{{- end -}}

{{/* The engines image: `cuda` tag for GPU pods, `cpuTag` otherwise (.gpu: true/false). */}}
{{- define "mattepipe.image.engines" -}}
{{- $i := .root.Values.image.engines -}}
{{- $tag := ternary $i.tag $i.cpuTag .gpu -}}
{{- printf "%s:%s" (include "mattepipe.repo" (dict "root" .root "repository" $i.repository)) (toString $tag) -}}
{{- end -}}

{{/* Secrets and checks ------------------------------------------------------------- */}}
{{- define "mattepipe.internalTokenSecret" -}}
{{- default (include "mattepipe.component" (dict "root" . "component" "internal-token")) .Values.internalToken.existingSecret -}}
{{- end -}}

{{- define "mattepipe.checks" -}}
{{- if not .Values.database.existingSecret -}}
{{- fail "database.existingSecret must name a Secret holding DATABASE_URL (postgresql+asyncpg://…): several gateways share one Postgres, SQLite cannot be shared" -}}
{{- end -}}
{{- if lt (int .Values.gateway.replicas) 1 -}}
{{- fail "gateway.replicas must be at least 1" -}}
{{- end -}}
{{- if not (has .Values.storage.type (list "s3" "volume")) -}}
{{- fail (printf "storage.type must be s3 or volume, not %q" .Values.storage.type) -}}
{{- end -}}
{{- if and (eq .Values.storage.type "s3") (not (hasPrefix "s3://" .Values.storage.s3.url)) -}}
{{- fail (printf "storage.s3.url must be s3://bucket/prefix, not %q" .Values.storage.s3.url) -}}
{{- end -}}
{{- if and (eq .Values.storage.type "volume") (not .Values.storage.volume.existingClaim) -}}
{{- fail "storage.type volume needs storage.volume.existingClaim (a ReadWriteMany PVC)" -}}
{{- end -}}
{{- $g := .Values.mattingWorker.gpu -}}
{{- if not (has $g.sharing (list "none" "time-slicing" "mps" "mig")) -}}
{{- fail (printf "mattingWorker.gpu.sharing must be none, time-slicing, mps or mig, not %q" $g.sharing) -}}
{{- end -}}
{{- if lt (int $g.sharedBy) 1 -}}
{{- fail "mattingWorker.gpu.sharedBy must be at least 1" -}}
{{- end -}}
{{- if lt (int $g.count) 0 -}}
{{- fail "mattingWorker.gpu.count must be 0 (CPU only) or more" -}}
{{- end -}}
{{- end -}}

{{/* GPU_MEMORY_FRACTION of the device the worker sees (README.md, "GPU sharing"). */}}
{{- define "mattepipe.gpuMemoryFraction" -}}
{{- $g := .Values.mattingWorker.gpu -}}
{{- if ne (toString $g.memoryFraction) "" -}}
{{- toString $g.memoryFraction -}}
{{- else if eq $g.sharing "time-slicing" -}}
{{- divf 0.9 (float64 $g.sharedBy) | printf "%.3f" -}}
{{- else -}}
0.9
{{- end -}}
{{- end -}}

{{/* Pod parts -------------------------------------------------------------------------- */}}
{{/* Environment every service gets: the ConfigMap and the internal token. */}}
{{- define "mattepipe.commonEnv" -}}
- name: INTERNAL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mattepipe.internalTokenSecret" . }}
      key: {{ .Values.internalToken.key }}
{{- end -}}

{{- define "mattepipe.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- end -}}

{{/* envFrom of a pod that reads or writes the data (gateways, workers). */}}
{{- define "mattepipe.storageEnvFrom" -}}
- configMapRef:
    name: {{ include "mattepipe.component" (dict "root" . "component" "config") }}
{{- if and (eq .Values.storage.type "s3") .Values.storage.s3.existingSecret }}
- secretRef:
    name: {{ .Values.storage.s3.existingSecret }}
{{- end }}
{{- end -}}

{{- define "mattepipe.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccount.name }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling of one component (.values: its block). */}}
{{- define "mattepipe.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* /app/data: the shared claim (storage.type volume) or a scratch emptyDir. */}}
{{- define "mattepipe.dataVolume" -}}
- name: data
{{- if eq .Values.storage.type "volume" }}
  persistentVolumeClaim:
    claimName: {{ .Values.storage.volume.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.storage.scratchSizeLimit }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "mattepipe.dataMounts" -}}
- name: data
  mountPath: /app/data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The three probes on /health (.startup: seconds allowed for the first good answer). */}}
{{- define "mattepipe.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ max 1 (div (int .startup) (int $p.periodSeconds)) }}
readinessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: 2
livenessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- end -}}

{{/* MODELS_DIR=/app/models: the models claim, or an emptyDir. */}}
{{- define "mattepipe.modelsVolume" -}}
- name: models
{{- if .Values.models.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.models.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
