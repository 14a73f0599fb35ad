from django.urls import path

from steering import views

urlpatterns = [
    path("chat/", views.chat, name="chat"),
    path("chat/<int:conversation_id>/", views.chat, name="chat-conversation"),
    path("profile/", views.profile, name="profile"),
]
