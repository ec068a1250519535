from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionResponse(_message.Message):
    __slots__ = ("version", "version_info")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    version: str
    version_info: str
    def __init__(self, version: _Optional[str] = ..., version_info: _Optional[str] = ...) -> None: ...

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
    hooks: _containers.RepeatedScalarFieldContainer[int]
    requires: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[_Union[PluginID, _Mapping]] = ..., description: _Optional[str] = ..., authors: _Optional[_Iterable[str]] = ..., license: _Optional[str] = ..., project_url: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., hooks: _Optional[_Iterable[int]] = ..., requires: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class PluginConfigs(_message.Message):
    __slots__ = ("configs",)
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[PluginConfig]
    def __init__(self, configs: _Optional[_Iterable[_Union[PluginConfig, _Mapping]]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...

class AddPeerRequest(_message.Message):
    __slots__ = ("peer_id", "address", "grpc_address")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    address: str
    grpc_address: str
    def __init__(self, peer_id: _Optional[str] = ..., address: _Optional[str] = ..., grpc_address: _Optional[str] = ...) -> None: ...

class AddPeerResponse(_message.Message):
    __slots__ = ("success", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: str
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class RemovePeerRequest(_message.Message):
    __slots__ = ("peer_id",)
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    def __init__(self, peer_id: _Optional[str] = ...) -> None: ...

class RemovePeerResponse(_message.Message):
    __slots__ = ("success", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: str
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
