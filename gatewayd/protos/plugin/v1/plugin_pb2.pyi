from gatewayd.protos.plugin.v1 import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HookName(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOOK_NAME_UNSPECIFIED: _ClassVar[HookName]
    HOOK_NAME_ON_CONFIG_LOADED: _ClassVar[HookName]
    HOOK_NAME_ON_NEW_LOGGER: _ClassVar[HookName]
    HOOK_NAME_ON_NEW_POOL: _ClassVar[HookName]
    HOOK_NAME_ON_NEW_CLIENT: _ClassVar[HookName]
    HOOK_NAME_ON_NEW_PROXY: _ClassVar[HookName]
    HOOK_NAME_ON_NEW_SERVER: _ClassVar[HookName]
    HOOK_NAME_ON_SIGNAL: _ClassVar[HookName]
    HOOK_NAME_ON_RUN: _ClassVar[HookName]
    HOOK_NAME_ON_BOOTING: _ClassVar[HookName]
    HOOK_NAME_ON_BOOTED: _ClassVar[HookName]
    HOOK_NAME_ON_OPENING: _ClassVar[HookName]
    HOOK_NAME_ON_OPENED: _ClassVar[HookName]
    HOOK_NAME_ON_CLOSING: _ClassVar[HookName]
    HOOK_NAME_ON_CLOSED: _ClassVar[HookName]
    HOOK_NAME_ON_TRAFFIC: _ClassVar[HookName]
    HOOK_NAME_ON_TRAFFIC_FROM_CLIENT: _ClassVar[HookName]
    HOOK_NAME_ON_TRAFFIC_TO_SERVER: _ClassVar[HookName]
    HOOK_NAME_ON_TRAFFIC_FROM_SERVER: _ClassVar[HookName]
    HOOK_NAME_ON_TRAFFIC_TO_CLIENT: _ClassVar[HookName]
    HOOK_NAME_ON_SHUTDOWN: _ClassVar[HookName]
    HOOK_NAME_ON_TICK: _ClassVar[HookName]
    HOOK_NAME_ON_HOOK: _ClassVar[HookName]
HOOK_NAME_UNSPECIFIED: HookName
HOOK_NAME_ON_CONFIG_LOADED: HookName
HOOK_NAME_ON_NEW_LOGGER: HookName
HOOK_NAME_ON_NEW_POOL: HookName
HOOK_NAME_ON_NEW_CLIENT: HookName
HOOK_NAME_ON_NEW_PROXY: HookName
HOOK_NAME_ON_NEW_SERVER: HookName
HOOK_NAME_ON_SIGNAL: HookName
HOOK_NAME_ON_RUN: HookName
HOOK_NAME_ON_BOOTING: HookName
HOOK_NAME_ON_BOOTED: HookName
HOOK_NAME_ON_OPENING: HookName
HOOK_NAME_ON_OPENED: HookName
HOOK_NAME_ON_CLOSING: HookName
HOOK_NAME_ON_CLOSED: HookName
HOOK_NAME_ON_TRAFFIC: HookName
HOOK_NAME_ON_TRAFFIC_FROM_CLIENT: HookName
HOOK_NAME_ON_TRAFFIC_TO_SERVER: HookName
HOOK_NAME_ON_TRAFFIC_FROM_SERVER: HookName
HOOK_NAME_ON_TRAFFIC_TO_CLIENT: HookName
HOOK_NAME_ON_SHUTDOWN: HookName
HOOK_NAME_ON_TICK: HookName
HOOK_NAME_ON_HOOK: HookName

class PluginID(_message.Message):
    __slots__ = ("name", "version", "remote_url", "checksum")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REMOTE_URL_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    remote_url: str
    checksum: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., remote_url: _Optional[str] = ..., checksum: _Optional[str] = ...) -> None: ...

class PluginConfig(_message.Message):
    __slots__ = ("id", "description", "authors", "license", "project_url", "config", "hooks", "requires", "tags", "categories")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RequiresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AUTHORS_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_URL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    id: PluginID
    description: str
    authors: _containers.RepeatedScalarFieldContainer[str]
    license: str
    project_url: str
    config: _containers.ScalarMap[str, str]
    hooks: _containers.RepeatedScalarFieldContainer[HookName]
    requires: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[_Union[PluginID, _Mapping]] = ..., description: _Optional[str] = ..., authors: _Optional[_Iterable[str]] = ..., license: _Optional[str] = ..., project_url: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., hooks: _Optional[_Iterable[_Union[HookName, str]]] = ..., requires: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...
