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

{{/* The provider flags, the same for the node and the controller. */}}
{{- define "sscsi.providerArgs" -}}
- --providers={{ include "sscsi.providers" . }}
{{- include "sscsi.providerSettings" . }}
{{- end -}}

{{/* The enabled providers' settings, for any process that serves them. */}}
{{- define "sscsi.providerSettings" -}}
{{- $p := .Values.providers -}}
{{- if $p.azure.enabled }}
- --azure-cloud-name={{ $p.azure.cloudName }}
{{- if $p.azure.allowNodeIdentity }}
- --azure-allow-node-identity
{{- end }}
{{- if $p.azure.writeCertAndKeyInSeparateFiles }}
- --azure-write-cert-and-key-in-separate-files
{{- end }}
{{- end }}
{{- if and $p.gcp.enabled $p.gcp.allowNodeIdentity }}
- --gcp-allow-node-identity
{{- end }}
{{- if and $p.gcp.enabled $p.gcp.allowNodePublishSecret }}
- --gcp-allow-node-publish-secret
{{- end }}
{{- if $p.local.enabled }}
- --local-provider-root=/local
{{- end }}
{{- if $p.vault.enabled }}
- --hmac-secret-name={{ $p.vault.hmacSecretName }}
{{- with $p.vault.address }}
- --vault-addr={{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The controller's names: its own, so the DaemonSet's selector never matches its pods. */}}
{{- define "sscsi.controllerName" -}}
{{- include "sscsi.name" . -}}-controller
{{- end -}}

{{- define "sscsi.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sscsi.controllerName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The controller's service account as a user name, for the admission policies. */}}
{{- define "sscsi.controllerUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "sscsi.controllerName" . }}
{{- end -}}

{{- define "sscsi.providerServerName" -}}
{{- include "sscsi.name" . -}}-provider-server
{{- end -}}

{{- define "sscsi.providerServerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sscsi.providerServerName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Whether the node must request pod tokens itself (serviceaccounts/token): "true" or
     "false". auto: when a provider in use needs a token kubelet does not pass: vault when
     its audience is not among the CSIDriver's tokenRequests, gcp when no
     workloadIdentityPool is set (its token is for the pool). */}}
{{- define "sscsi.tokenRequestsNeeded" -}}
{{- $mode := toString .Values.rbac.serviceAccountTokens -}}
{{- if eq $mode "true" -}}true
{{- else if eq $mode "false" -}}false
{{- else -}}
{{- $p := .Values.providers -}}
{{- $audiences := include "sscsi.audiences" . | fromJsonArray -}}
{{- if or (and $p.vault.enabled (not (has "vault" $audiences))) (and $p.gcp.enabled (not $p.gcp.workloadIdentityPool)) -}}true{{- else -}}false{{- end -}}
{{- end -}}
{{- end -}}
