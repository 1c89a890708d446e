{{- define "sscsi.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "sscsi.labels" -}}
app.kubernetes.io/name: {{ include "sscsi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sscsi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sscsi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sscsi.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- include "sscsi.name" . -}}
{{- end -}}
{{- end -}}

{{/* The enabled cloud providers, comma-separated. */}}
{{- define "sscsi.providers" -}}
{{- $names := list -}}
{{- range $name := list "aws" "azure" "gcp" "vault" -}}
{{- if (index $.Values.providers $name).enabled -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The audiences kubelet requests tokens for: the override, else what the enabled providers need. */}}
{{- define "sscsi.audiences" -}}
{{- $audiences := list -}}
{{- if .Values.tokenRequests -}}
{{- range .Values.tokenRequests -}}
{{- $audiences = append $audiences .audience -}}
{{- end -}}
{{- else -}}
{{- if .Values.providers.aws.enabled -}}
{{- $audiences = concat $audiences (list "sts.amazonaws.com" "pods.eks.amazonaws.com") -}}
{{- end -}}
{{- if .Values.providers.azure.enabled -}}
{{- $audiences = concat $audiences (list "api://AzureADTokenExchange" "api://AKSIdentityBinding") -}}
{{- end -}}
{{- if and .Values.providers.gcp.enabled .Values.providers.gcp.workloadIdentityPool -}}
{{- $audiences = append $audiences .Values.providers.gcp.workloadIdentityPool -}}
{{- end -}}
{{- if .Values.providers.vault.enabled -}}
{{- $audiences = append $audiences "vault" -}}
{{- end -}}
{{- end -}}
{{- toJson $audiences -}}
{{- end -}}

{{- define "sscsi.logLevel" -}}
{{- $v := int .Values.logVerbosity -}}
{{- if ge $v 6 -}}trace{{- else if ge $v 3 -}}debug{{- else -}}info{{- end -}}
{{- end -}}
