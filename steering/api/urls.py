"""/api/ routes. The seed's endpoints map onto them: /chat → chat/, /health → health/,
/preferences → profile/, /compute-vectors → POST vector-sets/, /load-vectors → POST
vector-sets/upload/, /vectors → GET vector-sets/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from steering.api import chat, controlvector_views, views

urlpatterns = [
    path("", views.ApiRoot.as_view(), name="api-root"),
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("health/", views.HealthView.as_view(), name="api-health"),
    path("chat/", chat.ChatView.as_view(), name="api-chat"),
    path("dimensions/", views.DimensionList.as_view(), name="api-dimensions"),
    path("dimensions/<slug:name>/", views.DimensionDetail.as_view(), name="api-dimension"),
    path("vector-sets/", views.VectorSetList.as_view(), name="api-vector-sets"),
    path("vector-sets/upload/", views.VectorSetUpload.as_view(), name="api-vector-set-upload"),
    path("vector-sets/<int:pk>/", views.VectorSetDetail.as_view(), name="api-vector-set"),
    path("vector-sets/<int:pk>/compute/", views.VectorSetCompute.as_view(), name="api-vector-set-compute"),
    path("vector-sets/<int:pk>/download/", views.VectorSetDownload.as_view(), name="api-vector-set-download"),
    path("vector-sets/<int:pk>/export.gguf", controlvector_views.VectorSetExportGguf.as_view(), name="api-vector-set-export-gguf"),
    path("vector-sets/import-gguf/", controlvector_views.VectorSetImportGguf.as_view(), name="api-vector-set-import-gguf"),
    path("profile/", views.ProfileView.as_view(), name="api-profile"),
    path("profile/history/", views.ProfileHistory.as_view(), name="api-profile-history"),
    path("profile/history/<int:pk>/undo/", views.ProfileUndo.as_view(), name="api-profile-undo"),
    path("calibrate/start/", views.CalibrationStart.as_view(), name="api-calibrate-start"),
    path("calibrate/choose/", views.CalibrationChoose.as_view(), name="api-calibrate-choose"),
    path("interactions/", views.InteractionList.as_view(), name="api-interactions"),
    path("interactions/<int:pk>/", views.InteractionDetail.as_view(), name="api-interaction"),
    path("interactions/<int:pk>/feedback/", views.InteractionFeedback.as_view(), name="api-feedback"),
    path("feedback/<int:pk>/", views.FeedbackDetail.as_view(), name="api-feedback-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file of its own and the template has no inline
    # style, as the Content-Security-Policy requires.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
]
