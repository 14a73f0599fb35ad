"""/api/ routes. The seed's endpoints map onto them: /chat → chat/, /health → health/,
/preferences → profile/, /compute-vectors → POST vector-sets/, /load-vectors → POST
vector-sets/upload/, /vectors → GET vector-sets/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from steering.chat.native import ChatView

from steering.api import calibrate, conversations, entry, gguf, health, interactions, learn, profiles, vector_sets

urlpatterns = [
    path("", entry.ApiRootView.as_view(), name="api-root"),
    path("auth/token/", entry.TokenView.as_view(), name="api-token"),
    path("health/", health.HealthView.as_view(), name="api-health"),
    path("chat/", ChatView.as_view(), name="api-chat"),
    path("dimensions/", vector_sets.DimensionListView.as_view(), name="api-dimensions"),
    path("dimensions/<slug:name>/", vector_sets.DimensionDetailView.as_view(), name="api-dimension"),
    path("vector-sets/", vector_sets.VectorSetListView.as_view(), name="api-vector-sets"),
    path("vector-sets/upload/", vector_sets.VectorSetUploadView.as_view(), name="api-vector-set-upload"),
    path("vector-sets/<int:pk>/", vector_sets.VectorSetDetailView.as_view(), name="api-vector-set"),
    path("vector-sets/<int:pk>/compute/", vector_sets.VectorSetComputeView.as_view(), name="api-vector-set-compute"),
    path("vector-sets/<int:pk>/download/", vector_sets.VectorSetDownloadView.as_view(), name="api-vector-set-download"),
    path("vector-sets/<int:pk>/export.gguf", gguf.VectorSetExportGgufView.as_view(), name="api-vector-set-export-gguf"),
    path("vector-sets/import-gguf/", gguf.VectorSetImportGgufView.as_view(), name="api-vector-set-import-gguf"),
    path("profile/", profiles.ProfileView.as_view(), name="api-profile"),
    path("profile/history/", profiles.ProfileHistoryView.as_view(), name="api-profile-history"),
    path("profile/history/<int:pk>/undo/", profiles.ProfileUndoView.as_view(), name="api-profile-undo"),
    path("calibrate/start/", calibrate.CalibrationStartView.as_view(), name="api-calibrate-start"),
    path("calibrate/choose/", calibrate.CalibrationChooseView.as_view(), name="api-calibrate-choose"),
    path("conversations/", conversations.ConversationListView.as_view(), name="api-conversations"),
    path("conversations/<int:pk>/", conversations.ConversationDetailView.as_view(), name="api-conversation"),
    path("interactions/", interactions.InteractionListView.as_view(), name="api-interactions"),
    path("interactions/<int:pk>/", interactions.InteractionDetailView.as_view(), name="api-interaction"),
    path("interactions/<int:pk>/feedback/", learn.InteractionFeedbackView.as_view(), name="api-feedback"),
    path("feedback/<int:pk>/", learn.FeedbackDetailView.as_view(), name="api-feedback-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file of its own and the template has no inline
    # style, as the Content-Security-Policy requires.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
]
